"""TRL's side of the tool-use benchmark: `trl.GRPOTrainer` in its own multi-turn tool mode (`tools=[...]`).

    python benchmarks/trl_tool_use.py            # CPU smoke run: the checks below, then one training step

`run_trl` trains a chat model on the `calculator` arithmetic tasks with GRPO while it may call a python tool,
set up to match our trainer's side of the comparison (`benchmarks/learn_tool_use.py`):

- Prompt: `[system SYSTEM_PROMPT (the tutorial's), user task.main_query]`, rendered with our
  `HERMES_TOOLS_TEMPLATE` and the tool's schema, as our collector renders it.
- Tool: `execute_python_code(code)`, which runs `code` in our sandbox (`agent_env.tools.execute_python_code`)
  and returns the text our agent reads back (`<returncode>..</returncode><stdout>..</stdout><stderr>..</stderr>`).
  Its description is taken from our agent's schema, so the schema TRL renders has the same content as ours.
- Tool calls are parsed by transformers' `parse_response` with `HERMES_RESPONSE_TEMPLATE` (below): the
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks our `HermesToolCallFormat` reads.
- Reward: our `MathAnswerAsJudge` on the last assistant message (after the tool round trips): 1 if its last
  `\\boxed{}` equals the answer, else 0.

Known differences from our side (TRL's behaviour, not removable through its API):
- TRL builds the tool schema from the function with transformers' `get_json_schema`, whose key order differs
  from agentscope's (same keys and values), so the `<tools>` JSON in the system turn has its keys in another
  order: 338 prompt tokens instead of our 336 for the first calculator task; everything else is identical,
  the tool turns included.
- A tool call whose JSON does not parse is plain text to TRL: no tool turn, the episode ends there. Our agent
  gets a parse-error tool result back and may go on. A call with "parameters" instead of "arguments" runs
  with no arguments in TRL (an error result); ours accepts it.
- `max_tokens` bounds the whole multi-turn completion (model turns and tool results); a tool result that would
  go past it is dropped and the episode ends. There is no per-turn limit.
- `max_tool_calls` is TRL's `max_tool_calling_iterations`: after that many tool rounds, a reply that still
  calls the tool ends the episode (the call is not run, and there is no summarising turn).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

HERMES_RESPONSE_TEMPLATE: dict[str, Any] = {
    # transformers' response template (its `parse_response`, which TRL calls on every completion) for the
    # assistant turns of `HERMES_TOOLS_TEMPLATE`: text, and any number of
    # `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, closed by `<|im_end|>`. Like
    # `HermesToolCallFormat`, the content is the text outside the blocks (here without its outer whitespace
    # stripped, which the judge ignores).
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {
            "close_pattern": r"<\|im_end\|>",
            "content": "text",
            "content_args": {"strip": False},
            "repeats": True,
            "join": "",
        },
    },
}


def agent_tool_schemas() -> list[dict[str, Any]]:
    """Our agent's tool schemas: agentscope's `Toolkit` with the sandboxed `execute_python_code`.

    That is the tool `AgentEnv` puts in place of agentscope's (`sandbox_python_tool=True`, the default) and the
    tutorial's workflow registers.
    """
    from agent_env.tools import execute_python_code as sandboxed
    from agentscope.tool import Toolkit

    toolkit = Toolkit()
    toolkit.register_tool_function(sandboxed)
    return toolkit.get_json_schemas()


def make_python_tool() -> Callable[[str], Any]:
    """The tool TRL gets: `async execute_python_code(code)`, returning the text of running `code` in our sandbox.

    TRL runs async tools on its own event loop. The docstring (from which transformers builds the schema) is
    Google-style, with the description and argument text of our agent's schema. The function has no return
    annotation: transformers would add it to the schema (`"return": {"type": "string"}`), which ours lacks.
    """
    from agent_env.tools import execute_python_code as sandboxed

    async def execute_python_code(code: str):  # noqa: ANN202 (see above)
        response = await sandboxed(code)
        return "".join(block["text"] for block in response.content if block["type"] == "text")

    function = agent_tool_schemas()[0]["function"]
    code_doc = function["parameters"]["properties"]["code"]["description"]
    execute_python_code.__doc__ = f"{function['description']}\n\nArgs:\n    code: {code_doc}\n"
    return execute_python_code


def task_rows(train_tasks: list[Any]) -> list[dict[str, Any]]:
    """The dataset TRL trains on: each task's prompt, reference answer and id."""
    from agent_env.envs.math_agent import SYSTEM_PROMPT

    return [
        {
            "prompt": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": task.main_query},
            ],
            "answer": task.metadata["answer"],
            "task_id": task.task_id,
        }
        for task in train_tasks
    ]


def make_reward() -> Callable[..., Any]:
    """TRL's reward function: `MathAnswerAsJudge` on the last assistant message; also logs the tool-call rate.

    `tool_call_rate` (a metric in TRL's logs) is the share of completions with at least one parsed tool call.
    """
    from agent_env.judges.math import MathAnswerAsJudge
    from agent_env.types import Task, WorkflowOutput, WorkflowTask

    judge = MathAnswerAsJudge()

    async def judge_one(messages: list[dict[str, Any]], answer: str, task_id: str) -> float:
        final = next(m for m in reversed(messages) if m["role"] == "assistant")
        task = WorkflowTask(task=Task(task_id=task_id, metadata={"answer": answer}))
        result = await judge.compute_reward(task, WorkflowOutput(metadata={"final_answer": final["content"]}))
        return result.reward

    async def math_answer_reward(
        completions: list[list[dict[str, Any]]],
        answer: list[str],
        task_id: list[str],
        log_metric: Callable[[str, float], None],
        **_: Any,
    ) -> list[float]:
        called = [any(m["role"] == "assistant" and m.get("tool_calls") for m in c) for c in completions]
        log_metric("tool_call_rate", sum(called) / len(called))
        return list(
            await asyncio.gather(
                *(judge_one(c, a, t) for c, a, t in zip(completions, answer, task_id, strict=True))
            )
        )

    return math_answer_reward


class _StepClock(TrainerCallback):
    """A `TrainerCallback` that times steps, stops at the first step ending after the budget, and keeps curves.

    The budget runs from the start of the first step (model loading and engine start-up are not counted).
    """

    def __init__(self, budget_s: float, log: Callable[[str], None]) -> None:
        self.budget_s = budget_s
        self.log = log
        self.started: float | None = None
        self.step_started = 0.0
        self.ended = 0.0
        self.step_times: list[float] = []
        self.rewards: list[float] = []
        self.tool_call_rates: list[float] = []
        self.tool_calls_per_completion: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.step_started = time.perf_counter()
        if self.started is None:
            self.started = self.step_started

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.ended = time.perf_counter()
        self.step_times.append(self.ended - self.step_started)
        if self.ended - self.started > self.budget_s:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
        if not logs or "reward" not in logs:  # the summary TRL logs when training ends
            return
        self.rewards.append(logs["reward"])
        self.tool_call_rates.append(logs["tool_call_rate"])
        self.tool_calls_per_completion.append(logs["tools/call_frequency"])
        self.log(
            f"step {len(self.rewards)}: {self.step_times[-1]:.2f} s, reward {logs['reward']:.3f}, "
            f"tool-call rate {logs['tool_call_rate']:.2f}, tool failures {logs['tools/failure_frequency']:.2f}"
        )


def build_trainer(
    model_dir: str,
    train_tasks: list,
    *,
    groups: int,
    group_size: int,
    max_tokens: int,
    lr: float,
    budget_s: float,
    temperature: float,
    seed: int,
    use_vllm: bool | None = None,
    max_tool_calls: int = 1,
    log: Callable[[str], None] = print,
) -> tuple[Any, _StepClock]:
    """The `GRPOTrainer` of `run_trl` (tokenizer, tool, reward and budget set up), and its step clock."""
    import torch
    from agent_rl.chat_template import HERMES_TOOLS_TEMPLATE
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available()
    if use_vllm is None:
        use_vllm = cuda and importlib.util.find_spec("vllm") is not None
    if use_vllm:  # vLLM colocated runs inside torch.distributed, which reads these
        ranks = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
        for key, value in {**ranks, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}.items():
            os.environ.setdefault(key, value)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = HERMES_TOOLS_TEMPLATE
    tokenizer.response_template = HERMES_RESPONSE_TEMPLATE
    batch = groups * group_size
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_tool_use_"),
        per_device_train_batch_size=batch,  # one optimizer step = one generation batch of `groups` groups
        gradient_accumulation_steps=1,
        num_generations=group_size,
        max_completion_length=max_tokens,  # all turns together, tool results included
        max_tool_calling_iterations=max_tool_calls,
        temperature=temperature,
        learning_rate=lr,
        beta=0.0,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        logging_steps=1,
        max_steps=1_000_000,  # the budget stops training
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        seed=seed,
        disable_tqdm=True,
        log_level="error",
        **(
            {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}
            if use_vllm
            else {}
        ),
    )
    clock = _StepClock(budget_s, log)
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=[make_reward()],
        args=config,
        train_dataset=Dataset.from_list(task_rows(train_tasks)),
        processing_class=tokenizer,
        tools=[make_python_tool()],
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; `clock` logs a line per step instead
    return trainer, clock


def run_trl(
    model_dir: str,
    train_tasks: list,
    *,
    groups: int,
    group_size: int,
    max_tokens: int,
    lr: float,
    budget_s: float,
    temperature: float,
    seed: int,
    out_dir: str,
    use_vllm: bool | None = None,
    max_tool_calls: int = 1,
    log=print,
) -> dict:
    """Train `model_dir` (a Hugging Face model directory) with TRL GRPOTrainer in tool mode on `train_tasks`
    until the first step that ends after `budget_s` seconds of training. Saves the trained weights+tokenizer to
    `out_dir/model` and returns {"steps": int, "train_s": float, "step_times": [float, ...], "median_step_s": float,
    "model_dir": str, "reward_curve": [per-step mean reward], "tool_call_rate_curve": [per-step share of completions
    that called the tool, if TRL logs it or you can compute it]}.

    Also returned: "tool_calls_per_completion_curve" (TRL's `tools/call_frequency`: tool calls run per
    completion, each call of a turn counted) and "engine". `train_s` runs from the first step's start to the
    last step's end. `use_vllm=None`: vLLM colocated when CUDA and vllm are there, else TRL's own generation.
    """
    trainer, clock = build_trainer(
        model_dir,
        train_tasks,
        groups=groups,
        group_size=group_size,
        max_tokens=max_tokens,
        lr=lr,
        budget_s=budget_s,
        temperature=temperature,
        seed=seed,
        use_vllm=use_vllm,
        max_tool_calls=max_tool_calls,
        log=log,
    )
    trainer.train()
    saved = str(Path(out_dir) / "model")
    trainer.save_model(saved)  # weights and the tokenizer, with our chat template
    return {
        "steps": len(clock.step_times),
        "train_s": clock.ended - clock.started,
        "step_times": clock.step_times,
        "median_step_s": statistics.median(clock.step_times),
        "model_dir": saved,
        "reward_curve": clock.rewards,
        "tool_call_rate_curve": clock.tool_call_rates,
        "tool_calls_per_completion_curve": clock.tool_calls_per_completion,
        "engine": "vllm colocate" if trainer.args.use_vllm else "transformers generate",
    }


# ---------------------------------------------------------------------------------------------------- checks


def check_tokens(trainer: Any, train_tasks: list) -> None:
    """Compare the tokens TRL renders with those our collector renders: a task's prompt (`render_prompt_ids`)
    and the tool turn after a tool call (`render_suffix_ids`)."""
    from agent_rl.chat_template import HERMES_TOOLS_TEMPLATE, render_prompt_ids, render_suffix_ids
    from transformers.utils import get_json_schema

    tokenizer = trainer.processing_class
    messages = task_rows(train_tasks[:1])[0]["prompt"]
    trl_ids = trainer._tokenize_prompts([messages])[0][0]  # what TRL's generation starts from
    ours = agent_tool_schemas()
    our_ids = render_prompt_ids(tokenizer, HERMES_TOOLS_TEMPLATE, messages, ours)
    trl_schema = get_json_schema(trainer.tools[0])  # what TRL passes to the template
    print(f"(b) prompt tokens: TRL {len(trl_ids)}, ours {len(our_ids)}, identical: {trl_ids == our_ids}")
    print(f"    tool schema equal as data (key order aside): {trl_schema == ours[0]}")
    if trl_ids != our_ids:
        at = next(
            (i for i, (a, b) in enumerate(zip(trl_ids, our_ids, strict=False)) if a != b),
            min(len(trl_ids), len(our_ids)),
        )
        print(f"    first difference at token {at}:")
        print(f"      TRL:  {tokenizer.decode(trl_ids[at : at + 40])!r}")
        print(f"      ours: {tokenizer.decode(our_ids[at : at + 40])!r}")
        reordered = render_prompt_ids(tokenizer, HERMES_TOOLS_TEMPLATE, messages, [trl_schema])
        print(f"    ours rendered with TRL's schema dict: identical to TRL's: {reordered == trl_ids}")

    call = {
        "type": "function",
        "function": {"name": "execute_python_code", "arguments": {"code": "print(1)"}},
    }
    turn = [{"role": "assistant", "content": "", "tool_calls": [call]}]
    result = [
        {
            "role": "tool",
            "name": "execute_python_code",
            "content": "<returncode>0</returncode><stdout>1\n</stdout>",
        }
    ]
    trl_suffix = trainer._get_tool_suffix_ids(result)
    our_suffix = render_suffix_ids(tokenizer, HERMES_TOOLS_TEMPLATE, messages + turn, result, ours)
    print(f"    tool-turn tokens identical: {trl_suffix == our_suffix} ({tokenizer.decode(trl_suffix)!r})")


def check_tool_round_trip(trainer: Any, clock: _StepClock) -> None:
    """Train one step on scripted turns: the model's generation is replaced by a well-formed tool call that
    prints the question's expression and, once a tool result is in the prompt, an answer that boxes its stdout.
    TRL must parse the call, run it in our sandbox, append the result, generate again, and the judge must
    score the answer 1."""
    tokenizer = trainer.processing_class

    def scripted_turns(prompt_ids, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        turns = []
        for ids in prompt_ids:
            prompt = tokenizer.decode(ids)
            if "<tool_response>" in prompt:
                stdout = re.findall(r"<stdout>(.*?)</stdout>", prompt, re.DOTALL)[-1].strip()
                text = f"The result is \\boxed{{{stdout}}}.<|im_end|>"
            else:
                expression = re.findall(r"What is (.+?)\?", prompt)[-1]
                call = {"name": "execute_python_code", "arguments": {"code": f"print({expression})"}}
                text = f"<tool_call>\n{json.dumps(call)}\n</tool_call><|im_end|>"
            turns.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        return turns, None  # TRL's own generation returns no logprobs either

    seen: list[Any] = []
    score = trainer._calculate_rewards

    def recording_rewards(inputs, prompts, completions, completion_ids):  # noqa: ANN001, ANN202
        seen.append(completions)
        return score(inputs, prompts, completions, completion_ids)

    trainer._generate_single_turn = scripted_turns
    trainer._calculate_rewards = recording_rewards
    trainer.train()
    print(
        f"(a) reward {clock.rewards[0]:.2f}, tool-call rate {clock.tool_call_rates[0]:.2f}, tool calls per "
        f"completion {clock.tool_calls_per_completion[0]:.2f}; the first completion's messages:"
    )
    for message in seen[0][0]:
        print(f"      {message}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=1.0)
    args = parser.parse_args()

    from agent_env.tasks.arithmetic import ArithmeticTasks
    from agent_rl.embedded_model import resolve_model_path

    model_dir = resolve_model_path(args.model)
    tasks = list(ArithmeticTasks("calculator", "train"))
    settings = {
        "groups": args.groups,
        "group_size": args.group_size,
        "lr": 1e-6,
        "temperature": 1.0,
        "seed": 0,
    }

    # The checks: one step of their own, with room for a tool call, its result and an answer.
    trainer, clock = build_trainer(model_dir, tasks, max_tokens=128, budget_s=0.0, **settings)
    check_tokens(trainer, tasks)
    check_tool_round_trip(trainer, clock)
    del trainer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        result = run_trl(
            model_dir, tasks, max_tokens=args.max_tokens, budget_s=args.budget_s, out_dir=out_dir, **settings
        )
        saved = sorted(p.name for p in Path(result["model_dir"]).iterdir())
    print(f"run_trl: {time.perf_counter() - started:.1f} s (model loading included); saved {saved}")
    print(result)


if __name__ == "__main__":
    main()
