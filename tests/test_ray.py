"""Episodes in Ray actors (`ajet.rollout.ray`): the same episodes as in process, and lost actors recovered.

Starting a Ray cluster and its actors takes ~25 s on 2 cores, so every check that needs one runs in the single
test `test_episodes_on_ray_actors` (pytest-xdist spreads a module's tests over its workers, and each would start
its own cluster): a local cluster of 2 CPUs in its own temp dir (`address="local"` never joins another one), two
env actors. The engine is scripted and stays in the test process, as the real engine stays with the GPUs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from agent_env import Task
from agent_env.config import load_config
from agent_env.from_config import env_factory_from_config
from agent_rl.embedded_model import embedded_model_dir
from agent_rl.engines.base import Completion
from agent_rl.rollout.collector import EnvLost, RolloutCollector
from agent_rl.rollout.from_config import build_collector
from agent_rl.rollout.ray_envs import RayEnvPool, connect
from transformers import AutoTokenizer

SCRIPTED = Path(__file__).resolve().parent / "scripted.py"
TASKS = [Task(main_query=f"What is {i} + 3?", task_id=f"t{i}", metadata={"answer": str(i + 3)}) for i in range(6)]
REPEAT = 2
EPISODES = len(TASKS) * REPEAT

WORKFLOW = '''
import asyncio
from agent_env import Workflow, WorkflowOutput

class Quiz(Workflow):
    """Asks, then asks "Are you sure?"; 0.1 per answer. `metadata["sleep_s"]` stalls the second step."""

    async def execute(self, workflow_task, model_tuner):
        messages = [{"role": "user", "content": workflow_task.task.main_query}]
        for turn in range(2):
            reply = await model_tuner(messages)
            if turn == 0:
                await asyncio.sleep(workflow_task.task.metadata.get("sleep_s", 0))
            messages += [{"role": "assistant", "content": reply.content[0]["text"]}, {"role": "user", "content": "Are you sure?"}]
            model_tuner.add_reward(0.1)
        return WorkflowOutput(metadata={"final_answer": messages[-2]["content"]})
'''


class QuizEngine:
    """A scripted policy: for "What is a + b?" it answers a + b when a is even, a + b + 1 when odd. While `pause`
    is set to an event, every call waits for it (and is counted in `waiting`)."""

    max_model_len = 4096

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pause: asyncio.Event | None = None
        self.waiting = 0

    async def generate(self, prompt_ids, params):
        if self.pause is not None:
            self.waiting += 1
            await self.pause.wait()
        a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", self.tokenizer.decode(prompt_ids))[-1])
        text = f"It is {a + b + a % 2}."
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return [Completion(ids, [-0.5] * len(ids), "stop", text)]


def quiz_config(folder: Path) -> Path:
    (folder / "quiz.py").write_text(WORKFLOW)
    path = folder / "quiz.yaml"
    path.write_text(
        "ajet:\n"
        "  rollout:\n"
        "    agentscope_workflow: quiz.py:Quiz\n"
        f"    num_repeat: {REPEAT}\n"
        "    max_response_length_in_one_turn: 32\n"
        "    ray:\n"
        "      num_actors: 2\n"
        "      step_timeout_s: 60\n"
        "  task_judge:\n"
        f"    judge_protocol: {SCRIPTED}:EchoJudge\n"
    )
    return path


@pytest.fixture
def ray_cluster():
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 characters
    connect("local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    import ray

    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def outcomes(batch):
    return sorted((e.episode_id, round(e.reward, 6), e.is_success, e.termination_reason, e.num_turns,
                   [(s.prompt_ids, s.response_ids, s.loss_mask) for s in e.samples]) for e in batch.episodes)


def served(ray, pool: RayEnvPool) -> list[int]:
    return [info["served"] for info in ray.get([actor.ready.remote() for actor in pool.actors])]


async def test_episodes_on_ray_actors(ray_cluster, tmp_path):
    path = quiz_config(tmp_path)
    engine = QuizEngine(AutoTokenizer.from_pretrained(embedded_model_dir()))
    reference = await build_collector(load_config(str(path), []), engine, engine.tokenizer).collect(TASKS, REPEAT, seed=0)
    collector = build_collector(load_config(str(path), ["ajet.rollout.ray.enabled=true"]), engine, engine.tokenizer)
    pool = collector.env_factory.__self__
    try:
        await check_same_episodes_as_in_process_spread_over_the_actors(ray_cluster, collector, reference)
        await asyncio.to_thread(check_the_sync_api_mirrors_the_local_one_and_raises_the_envs_own_errors, pool)
        await check_a_step_without_an_answer_times_out_as_a_lost_episode(ray_cluster, pool)
        await check_episodes_of_a_killed_actor_are_replayed_on_a_live_one(ray_cluster, collector, engine, reference)
        await check_beyond_its_retries_a_lost_episode_fails_and_is_counted(ray_cluster, collector, engine)
        actors = list(pool.actors)
        collector.close()  # the collector owns the pool build_collector started: closing it kills the actors
        assert pool.actors == [] and all(is_dead(ray_cluster, actor) for actor in actors)
    finally:
        pool.close()


def is_dead(ray, actor) -> bool:
    """True when `actor` is dead (a call on it raises Ray's actor-died error)."""
    try:
        ray.get(actor.ready.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return True
    return False


async def check_same_episodes_as_in_process_spread_over_the_actors(ray, collector, reference):
    pool = collector.env_factory.__self__
    before = served(ray, pool)
    batch = await collector.collect(TASKS, num_repeat=REPEAT, seed=0)
    assert all(e.error is None for e in batch.episodes)
    assert {round(e.reward, 6) for e in batch.episodes} == {0.2, 1.2}  # both judge outcomes occur
    assert outcomes(batch) == outcomes(reference)
    after = served(ray, pool)
    assert [a - b for a, b in zip(after, before, strict=True)] == [EPISODES // 2] * 2  # least-loaded placement balances them
    metrics = batch.metrics()
    assert metrics["rollout/env_lost_restarts"] == 0 and metrics["rollout/env_lost_episodes"] == 0


async def kill_one_actor_mid_run(ray, collector, engine):
    """Run a batch; once every episode waits on its first model call, kill the actor holding the most of them,
    then let them go on. Returns the batch and how many episodes the killed actor held."""
    pool = collector.env_factory.__self__
    engine.pause, engine.waiting = asyncio.Event(), 0
    try:
        run = asyncio.create_task(collector.collect(TASKS, num_repeat=REPEAT, seed=0))
        async with asyncio.timeout(60):
            while engine.waiting < EPISODES:
                await asyncio.sleep(0.02)
        held, victim = max(zip(pool.open_episodes, pool.actors, strict=True), key=lambda pair: pair[0])
        ray.kill(victim)
        engine.pause.set()
        return await asyncio.wait_for(run, 120), held
    finally:
        engine.pause = None


async def check_episodes_of_a_killed_actor_are_replayed_on_a_live_one(ray, collector, engine, reference):
    pool = collector.env_factory.__self__
    replaced = pool.replaced_actors
    batch, held = await kill_one_actor_mid_run(ray, collector, engine)
    assert held == EPISODES // 2  # least-loaded placement: half on each actor
    assert all(e.error is None for e in batch.episodes)
    assert outcomes(batch) == outcomes(reference)
    metrics = batch.metrics()
    assert metrics["rollout/env_lost_restarts"] == held and metrics["rollout/env_lost_episodes"] == 0
    assert sorted(e.env_restarts for e in batch.episodes) == [0] * (EPISODES - held) + [1] * held
    assert pool.replaced_actors == replaced + 1 and len(pool.actors) == 2


async def check_beyond_its_retries_a_lost_episode_fails_and_is_counted(ray, collector, engine):
    no_retry = RolloutCollector(collector.env_factory, engine, engine.tokenizer, collector.sampling,
                                limits=collector.limits, max_env_restarts=0)
    batch, held = await kill_one_actor_mid_run(ray, no_retry, engine)
    lost = [e for e in batch.episodes if e.env_lost]
    assert held > 0 and len(lost) == held and all(e.samples == [] and "EnvLost" in e.error for e in lost)
    assert all(e.error is None and e.samples for e in batch.episodes if not e.env_lost)
    metrics = batch.metrics()
    assert metrics["rollout/env_lost_episodes"] == held == metrics["rollout/failed_episodes"]
    assert metrics["rollout/env_lost_restarts"] == 0


async def check_a_step_without_an_answer_times_out_as_a_lost_episode(ray, pool):
    replaced, timeout = pool.replaced_actors, pool.step_timeout_s
    env = pool.env()
    sleepy = Task(main_query="What is 2 + 3?", task_id="sleepy", metadata={"answer": "5", "sleep_s": 30})
    await env.areset(options={"task": sleepy})
    pool.step_timeout_s = 0.5
    try:
        async with asyncio.timeout(10):
            with pytest.raises(EnvLost, match="gave no answer to step\\(\\) within 0.5 s"):
                await env.astep("It is 5.")
    finally:
        pool.step_timeout_s = timeout
        await env.aclose()
    assert pool.replaced_actors == replaced  # the actor still answered its ping: kept
    assert sum(info["episodes"] for info in ray.get([a.ready.remote() for a in pool.actors])) == 0


def check_the_sync_api_mirrors_the_local_one_and_raises_the_envs_own_errors(pool):
    env = pool.env()
    with pytest.raises(RuntimeError, match="without a running episode"):
        env.step("hello")
    obs, info = env.reset(options={"task": TASKS[0], "episode_id": "e-1"})
    assert obs["call_id"] and obs["messages"][0]["content"] == TASKS[0].main_query and info["episode_id"] == "e-1"
    with pytest.raises(ValueError, match="truncating reason"):
        env.truncate("finished")
    obs, reward, terminated, truncated, info = env.truncate("context_overflow")
    assert (terminated, truncated, info["termination_reason"], obs["call_id"]) == (False, True, "context_overflow", "")
    env.close()
    env.close()


async def test_an_episode_whose_env_is_lost_is_played_again_from_its_start(tmp_path):
    config = load_config(str(quiz_config(tmp_path)), [])
    engine = QuizEngine(AutoTokenizer.from_pretrained(embedded_model_dir()))
    reference = await build_collector(config, engine, engine.tokenizer).collect(TASKS[:1], 1, seed=0)
    make, envs = env_factory_from_config(config), []

    def first_env_is_lost_after_one_turn():
        env = make()
        envs.append(env)
        if len(envs) == 1:
            async def lost(action):
                raise EnvLost("its host died")
            env.astep = lost
        return env

    collector = build_collector(config, engine, engine.tokenizer)
    collector.env_factory = first_env_is_lost_after_one_turn
    batch = await collector.collect(TASKS[:1], 1, seed=0)
    (episode,) = batch.episodes
    assert len(envs) == 2 and episode.error is None and episode.env_restarts == 1
    assert outcomes(batch) == outcomes(reference)  # the lost attempt's partial sample is gone
    assert batch.metrics()["rollout/env_lost_restarts"] == 1


def test_agent_rl_train_with_ray_trains_with_ray_episodes(monkeypatch):
    import agent_cli.train
    from agent_cli.main import main

    configs = []
    monkeypatch.setattr(agent_cli.train, "run_train", lambda config, **kwargs: configs.append(config) or 0)
    example = Path(__file__).resolve().parents[1] / "examples" / "math_agent" / "math_agent.yaml"
    assert main(["train", "--config", str(example), "--with-ray"]) == 0
    assert configs[0].ajet.rollout.ray.enabled


def test_an_address_in_the_yaml_turns_ray_on(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("ajet:\n  rollout:\n    agentscope_workflow: w.py:W\n    ray: {address: auto}\n")
    assert load_config(str(path), []).ajet.rollout.ray.enabled
    assert not load_config(str(path), ["ajet.rollout.ray.enabled=false"]).ajet.rollout.ray.enabled
