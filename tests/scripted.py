"""Scripted workflows and a judge shared by the env and env-service test suites (no model, no agentscope agent)."""

from __future__ import annotations

from agent_env import JudgeResult, Workflow, WorkflowOutput


class EchoJudge:
    """Reward 1 when the workflow's final answer contains the reference answer."""

    def compute_reward(self, workflow_task, workflow_output):
        ok = workflow_task.task.metadata["answer"] in str(workflow_output.metadata.get("final_answer", ""))
        return JudgeResult(float(ok), ok, {"contains_answer": float(ok)})


class SpreadOnEvenTasks:
    """Rewards that differ within a group only for tasks with an even index (`arith-...-N`): the others are
    zero-variance groups (every episode 0.5)."""

    def __init__(self, config=None, **kwargs):
        pass

    def compute_reward(self, workflow_task, workflow_output):
        index = int(workflow_task.task.task_id.rsplit("-", 1)[1])
        reward = float(workflow_task.repeat_index % 2) if index % 2 == 0 else 0.5
        return JudgeResult(reward, reward == 1.0, {})


class ChatLoop(Workflow):
    """Asks the model three times (no agentscope), rewarding each reply with 0.1 per step."""

    async def execute(self, workflow_task, model_tuner):
        messages = [{"role": "user", "content": workflow_task.task.main_query}]
        for _ in range(3):
            reply = await model_tuner(messages)
            messages.append({"role": "assistant", "content": reply.content[0]["text"] if reply.content else ""})
            messages.append({"role": "user", "content": "go on"})
            model_tuner.add_reward(0.1)
        return WorkflowOutput(metadata={"final_answer": messages[-2]["content"]})


class Raises(Workflow):
    async def execute(self, workflow_task, model_tuner):
        await model_tuner([{"role": "user", "content": "hi"}])
        raise ValueError("boom in the workflow")


class NanOnEvenTasks:
    """A broken judge: reward NaN for tasks with an even index (`arith-...-N`), else 1 for even repeats, 0 for odd."""

    def __init__(self, config=None, **kwargs):
        pass

    def compute_reward(self, workflow_task, workflow_output):
        index = int(workflow_task.task.task_id.rsplit("-", 1)[1])
        reward = float("nan") if index % 2 == 0 else float(workflow_task.repeat_index % 2 == 0)
        return JudgeResult(reward, reward == 1.0, {})
