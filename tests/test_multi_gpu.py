"""Several processes and GPUs: weight broadcast in packed buckets, one step of staleness, and data-parallel training.

CPU parts: the bucket protocol (in process, and over a gloo group of two processes), `max_staleness: 1` with the
HF engine holding its own copy of the model, and `torchrun --nproc-per-node 2` (gloo) against one process on the
same seeded episodes. GPU parts (vLLM on a GPU of its own, NCCL) skip without two CUDA devices and vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from agent_env.config import load_config
from agent_rl.distributed import Ranks, launch_mismatch, resolve_engine_gpus
from agent_rl.engines.weight_broadcast import layout_numel, pack_buckets, receive_bucket, unpack_bucket

TESTS = Path(__file__).parent
REPO = TESTS.parent

# The tiny trainer config of tests/test_trainer.py, with a judge that gives every even task's group a reward spread
# (so advantages are not all zero and the weights move).
CONFIG = """
ajet:
  project_name: tiny
  model:
    path: embedded:tiny-random-SmolLM2
  task_reader:
    type: arithmetic
    arithmetic: {level: easy, num_train: 6, num_validation: 2}
  data: {train_batch_size: 2, max_prompt_length: 256, max_response_length: 24}
  rollout:
    env_id: agent_env/Completion-v0
    num_repeat: 2
    max_response_length_in_one_turn: 12
    engine: hf
  task_judge:
    judge_protocol: scripted:SpreadOnEvenTasks
  trainer_common: {save_freq: 0, test_freq: 2, total_epochs: 1, logger: [console], seed: 5}
  learner: {lr: 1.0e-3, max_tokens_per_micro_batch: 512}
"""


def _write_config(directory: Path, text: str = CONFIG) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(text)
    return path


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _checksum(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in module.parameters()))


# ---------------------------------------------------------------- the bucket protocol


def test_buckets_hold_every_tensor_in_order_and_unpack_to_the_same_values():
    generator = torch.Generator().manual_seed(0)
    weights = [(f"w{i}", torch.randn(shape, generator=generator)) for i, shape in
               enumerate([(3, 4), (5,), (40, 10), (2, 2, 2), (7,)])]
    received = []
    buckets = 0
    # 64 float32 elements per bucket: (40, 10) is larger and travels alone; the buffer is reused, so copy out
    for layout, flat in pack_buckets(iter(weights), torch.float32, "cpu", bucket_bytes=64 * 4):
        buckets += 1
        assert flat.numel() == layout_numel(layout) and (flat.numel() <= 64 or len(layout) == 1)
        received += [(name, tensor.clone()) for name, tensor in unpack_bucket(flat, layout)]
    assert buckets == 3
    assert [name for name, _ in received] == [name for name, _ in weights]
    for (_, sent), (_, got) in zip(weights, received, strict=True):
        assert torch.equal(sent, got)


def test_buckets_cast_to_the_receivers_dtype():
    weights = [("a", torch.tensor([1.0, 2.5, -3.0])), ("b", torch.ones(2, 2))]
    (layout, flat), = pack_buckets(weights, torch.bfloat16, "cpu")
    assert flat.dtype == torch.bfloat16
    assert [name for name, _ in unpack_bucket(flat, layout)] == ["a", "b"]
    assert unpack_bucket(flat, layout)[1][1].shape == (2, 2)


SHAPES = {"embed.weight": (300, 16), "layer0.q.weight": (16, 16), "layer0.norm.weight": (16,), "head.weight": (300, 16)}


def _gloo_broadcast_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    generator = torch.Generator().manual_seed(rank)
    weights = {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}
    if rank == 0:  # the learner's end: weights packed and broadcast a bucket at a time (2 KiB: several buckets)
        for layout, flat in pack_buckets(weights.items(), torch.float32, "cpu", bucket_bytes=2048):
            dist.broadcast_object_list([layout], src=0)  # what collective_rpc carries to vLLM's workers
            dist.broadcast(flat, src=0)
        dist.broadcast_object_list([None], src=0)
    else:  # the engine's end, as in WeightSyncExtension.agent_rl_receive_weight_bucket
        buckets = 0
        while True:
            holder = [None]
            dist.broadcast_object_list(holder, src=0)
            if holder[0] is None:
                break
            buckets += 1
            for name, tensor in receive_bucket(holder[0], torch.float32, "cpu", lambda t: dist.broadcast(t, src=0)):
                weights[name].copy_(tensor)
        assert buckets == 3  # two tensors too large for a bucket travel alone, the two small ones together
    torch.save(weights, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_weights_broadcast_in_buckets_reach_another_process(tmp_path, worker_port_base):
    import torch.multiprocessing as mp

    mp.start_processes(_gloo_broadcast_worker, args=(worker_port_base + 21, str(tmp_path)), nprocs=2, start_method="spawn")
    sent, received = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert list(sent) == list(received) == list(SHAPES)
    for name in sent:
        assert torch.equal(sent[name], received[name]), name


# ---------------------------------------------------------------- placement and config checks


def test_engine_gpus_default_to_the_last_and_must_not_be_a_learner_rank():
    three_ranks = Ranks(rank=0, world_size=3, local_rank=0, local_world_size=3)
    assert resolve_engine_gpus(None, three_ranks, gpu_count=4) == [3]
    assert resolve_engine_gpus([2, 3], Ranks(0, 2, 0, 2), gpu_count=4) == [2, 3]
    with pytest.raises(ValueError, match=r"launch `torchrun --nproc-per-node 3 \.\.\.`, e\.g\. engine_gpus: \[3\]"):
        resolve_engine_gpus([0], three_ranks, gpu_count=4)
    with pytest.raises(ValueError, match=r"has \[7\], but this node has GPUs 0\.\.3"):
        resolve_engine_gpus([7], three_ranks, gpu_count=4)
    with pytest.raises(ValueError, match="this machine has no GPU"):
        resolve_engine_gpus(None, three_ranks, gpu_count=0)


def test_a_launch_with_fewer_processes_than_the_config_asks_for_is_named():
    one = Ranks(0, 1, 0, 1)
    assert launch_mismatch(1, 1, one, engine_gpus=0) is None
    assert "--nnodes 1 --nproc-per-node 3" in launch_mismatch(4, 1, one, engine_gpus=1)
    assert launch_mismatch(4, 2, Ranks(0, 6, 0, 3), engine_gpus=1) is None


def test_one_step_of_staleness_needs_the_importance_sampling_correction(tmp_path):
    text = CONFIG.replace("seed: 5}", "seed: 5, max_staleness: 1}").replace("max_tokens_per_micro_batch: 512}",
                                                                              "max_tokens_per_micro_batch: 512, tis_cap: null}")
    with pytest.raises(ValueError, match=r"ajet.learner.tis_cap: is null but ajet.trainer_common.max_staleness is 1"):
        load_config(_write_config(tmp_path, text))
    text = CONFIG.replace("seed: 5}", "seed: 5, max_staleness: 2}")
    with pytest.raises(ValueError, match="max_staleness"):
        load_config(_write_config(tmp_path, text))


# ---------------------------------------------------------------- one step of staleness (HF engine, own copy)


@pytest.mark.slow
def test_with_one_step_of_staleness_each_batch_is_sampled_by_the_previous_weights_while_the_learner_trains(
    tmp_path, worker_port_base, monkeypatch
):
    from agent_rl.engines.hf import HFEngine
    from agent_rl.learner import Learner
    from agent_rl.trainer import Trainer, train

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 23))
    monkeypatch.syspath_prepend(str(TESTS))
    text = CONFIG.replace("seed: 5}", "seed: 5, max_staleness: 1, val_before_train: false}").replace("test_freq: 2", "test_freq: 0")
    config = load_config(_write_config(tmp_path, text))

    events: dict[str, list] = {"collections": [], "train": [], "generate": []}
    collect, train_step, generate = Trainer._collect_training_batch, Learner.train_step, HFEngine.generate

    def recording_collect(self, number):
        before = _checksum(self.engine.model)
        started = time.perf_counter()
        result = collect(self, number)
        events["collections"].append((number, before, _checksum(self.engine.model), started, time.perf_counter()))
        return result

    def recording_train_step(self, samples):
        started = time.perf_counter()
        metrics = train_step(self, samples)
        events["train"].append((started, time.perf_counter(), _checksum(self.module)))
        return metrics

    async def recording_generate(self, prompt_ids, params=None):
        events["generate"].append(time.perf_counter())
        return await generate(self, prompt_ids, params)

    monkeypatch.setattr(Trainer, "_collect_training_batch", recording_collect)
    monkeypatch.setattr(Learner, "train_step", recording_train_step)
    monkeypatch.setattr(HFEngine, "generate", recording_generate)
    run_dir = tmp_path / "run"
    train(config, run_dir, max_steps=3)

    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["rollout/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert all("learner/tis/weight_mean" in r and r["learner/loss"] == r["learner/loss"] for r in rows)
    collections = sorted(events["collections"])
    assert [c[0] for c in collections] == [1, 2, 3]
    assert all(before == after for _, before, after, _, _ in collections)  # never updated mid-collection
    learner_after = [checksum for _, _, checksum in events["train"]]
    assert len(set(learner_after)) == 3  # training moved the weights every step
    initial = collections[0][1]
    # batch 1 and 2 were sampled by the initial weights, batch 3 by the weights step 1 produced
    assert [c[1] for c in collections] == [initial, initial, learner_after[0]]
    # batch 2 was being collected while step 1 trained, and batch 3 while step 2 trained
    for (train_start, train_end, _), (_, _, _, collect_start, collect_end) in zip(events["train"][:2], collections[1:], strict=True):
        assert collect_start < train_end and collect_end > train_start
        assert any(train_start < t < train_end for t in events["generate"])
    assert rows[1]["timing/rollout_wait_s"] < rows[1]["timing/rollout_s"] + rows[1]["timing/learn_s"]


# ---------------------------------------------------------------- data-parallel learner: torchrun, 2 gloo ranks


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    checkpoint = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).state_dict()


@pytest.mark.slow
def test_two_ranks_under_torchrun_match_one_rank_on_the_same_episodes(tmp_path, worker_port_base, monkeypatch):
    """Rank 0 collects with its own copy of the model and broadcasts the samples; both ranks train on them. The
    episodes are seeded, so the one-rank run (whose engine shares the learner's module) collects the same ones."""
    from agent_rl.trainer import train

    config_path = _write_config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("NCCL_NVLS_ENABLE", None)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(worker_port_base + 25),
         "-m", "agent_cli.main", "train", "--config", str(config_path), "--max-steps", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert launched.stdout.count("done: metrics in") == 1  # only rank 0 speaks
    two_ranks = tmp_path / "launcher_record" / "tiny"

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 27))
    monkeypatch.syspath_prepend(str(TESTS))
    one_rank = tmp_path / "one_rank"
    train(load_config(config_path), one_rank, max_steps=2)

    rows_two, rows_one = _rows(two_ranks), _rows(one_rank)
    assert [r["step"] for r in rows_two] == [0, 1, 2]  # written once: only rank 0 writes the run directory
    for two, one in zip(rows_two[1:], rows_one[1:], strict=True):
        for key in ("reward/mean", "tokens/generated", "learner/trained_tokens", "rollout/staleness"):
            assert two[key] == one[key], key
        for key in ("learner/loss", "learner/advantage/abs_mean", "learner/entropy", "learner/tis/weight_mean"):
            assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
        assert two["learner/grad_norm"] == pytest.approx(one["learner/grad_norm"], rel=1e-4), "grad_norm"
    assert rows_one[1]["learner/advantage/abs_mean"] > 0  # the batch had something to learn from
    for step in (1, 2):
        name = f"trajectories/step_{step}.jsonl"
        assert [json.loads(line)["response_ids"] for line in (two_ranks / name).read_text().splitlines()] == [
            json.loads(line)["response_ids"] for line in (one_rank / name).read_text().splitlines()]
    weights_two, weights_one = _final_weights(two_ranks), _final_weights(one_rank)
    initial = _final_weights_initial()
    assert any(not torch.equal(weights_one[n], initial[n]) for n in initial)  # training changed the weights
    # Adam divides each gradient by its running RMS, so an element whose gradient is near Adam's eps turns the ~1e-7
    # relative difference of summing the loss over one rank or two into up to ~1% of one step (lr 1e-3): atol 1e-5
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=1e-5, atol=1e-5, msg=name)
    assert "NCCL_NVLS_ENABLE" not in os.environ or os.environ["NCCL_NVLS_ENABLE"] == "0"


def _final_weights_initial() -> dict[str, torch.Tensor]:
    from agent_rl.embedded_model import tiny_random_model_dir
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_random_model_dir(), dtype=torch.float32).state_dict()


# ---------------------------------------------------------------- GPUs only


def _two_gpus_and_vllm() -> bool:
    if torch.cuda.device_count() < 2:
        return False
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _two_gpus_and_vllm(), reason="needs 2 CUDA devices and vLLM")
def test_vllm_on_its_own_gpu_takes_weights_broadcast_over_nccl():
    import asyncio

    from agent_rl.embedded_model import tiny_random_model_dir
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.vllm import VLLMEngine
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    model_dir = tiny_random_model_dir()
    torch.cuda.set_device(0)
    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().state_dict()
    engine = VLLMEngine(model_dir, weight_sync="nccl", devices=[1], gpu_memory_utilization=0.3, max_model_len=256,
                        enable_sleep_mode=False, enforce_eager=True, weight_bucket_bytes=2**20)
    loop = asyncio.new_event_loop()
    greedy = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    try:
        prompt = [1, 2, 3, 4, 5]
        before = loop.run_until_complete(engine.generate(prompt, greedy))[0].token_ids
        shifted = {name: tensor + 0.05 * torch.randn_like(tensor) for name, tensor in original.items()}
        loop.run_until_complete(engine.update_weights(shifted))
        changed = loop.run_until_complete(engine.generate(prompt, greedy))[0].token_ids
        loop.run_until_complete(engine.update_weights(original.items()))
        restored = loop.run_until_complete(engine.generate(prompt, greedy))[0].token_ids
    finally:
        engine.close()
        loop.close()
    assert changed != before and restored == before


def test_the_scaling_benchmark_describes_itself():
    shown = subprocess.run([sys.executable, str(REPO / "benchmarks" / "multi_gpu_scaling.py"), "--help"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--gpus" in shown.stdout and "torchrun" in shown.stdout


@pytest.mark.slow
def test_the_scaling_benchmark_runs_one_cpu_rank_and_writes_nothing():
    results = REPO / "benchmarks" / "RESULTS.md"
    section = "## Multi-GPU scaling"
    before = results.read_text().count(section) if results.exists() else 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ran = subprocess.run([sys.executable, str(REPO / "benchmarks" / "multi_gpu_scaling.py"), "--cpu", "--gpus", "1",
                          "--shape", "tiny", "--steps", "1", "--warmup", "0", "--groups", "2", "--group-size", "2",
                          "--prompt-len", "8", "--response-len", "8"], env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "| CPU ranks | s/step |" in ran.stdout and "| 1 | 0." in ran.stdout
    assert "weight sync: skipped (needs 2 GPUs and vLLM" in ran.stdout
    assert (results.read_text().count(section) if results.exists() else 0) == before  # CPU numbers are never written
