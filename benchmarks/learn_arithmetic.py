"""Does training make the model better, and how fast? Held-out arithmetic accuracy before and after GRPO.

    python benchmarks/learn_arithmetic.py --runner ours --level easy --budget-s 240 --json out/ours_easy.json
    python benchmarks/learn_arithmetic.py --runner trl  --level easy --budget-s 240 --json out/trl_easy.json
    python benchmarks/learn_arithmetic.py --report out/*.json          # rewrites the section of RESULTS.md

The work is the issue's anchor (TRL's reference run, docs/design.md): SmolLM2-135M-Instruct (the
embedded model), the built-in arithmetic tasks (`easy`: a ± b with a, b ≤ 20; `mix`: two-digit ± and one-digit ×
two-digit), 8 prompts × 8 completions of at most 128 tokens per step (`--groups`, `--max-tokens`), temperature 1, lr 2e-5, β = 0, reward 1 for
the right last number (`LastNumberJudge(format_weight=0)`; `--format-weight 0.1` adds the \\boxed{} shaping).
Training stops at the first step that ends after `--budget-s` seconds of training (set-up and evaluation are not
counted, as in the anchor).

Runners, one per process (each loads its own model and engine):
- `ours`: `agent_rl.Trainer` on the config below: the collector over `agent_env/Completion-v0` episodes, the
  DeepSpeed learner, and vLLM colocated on a GPU (without vLLM or a GPU: the HF engine sharing the learner's
  weights, which is the CPU run). `--max-staleness 1` collects step k+1 while step k trains (the engine keeps
  the weights of step k-1 meanwhile; truncated importance sampling corrects for it).
- `trl`: TRL's `GRPOTrainer` on the same model, prompts, batch, lengths, lr, β and reward; `use_vllm=True,
  vllm_mode="colocate"` on a GPU, TRL's own generation on the CPU.

Held-out evaluation is the same for both: the validation split (256 problems, seed 2), greedy, at most 128 new
tokens, with `transformers` `generate` on the trained weights. `lenient` = the last number (the content of the last
\\boxed{} if any) is right (the reward's criterion); `strict` = the last \\boxed{} holds the right answer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import by_tenth  # noqa: E402

MODEL = "embedded:SmolLM2-135M-Instruct"
GROUP_SIZE = 8
EVAL_MAX_TOKENS = 128
"""Held-out generations are cut at this many tokens, whatever the training length."""


def heldout_tasks(level: str, n: int) -> list[Any]:
    from agent_env.tasks.arithmetic import ArithmeticTasks

    return list(ArithmeticTasks(level=level, split="validation", n=n))


def score(text: str, answer: str) -> tuple[bool, bool]:
    """(strict, lenient) correctness of one completion: last \\boxed{} right; last number (box first) right."""
    from agent_env.judges.answer_extraction import answers_match, last_boxed
    from agent_env.judges.last_number import score_last_number

    boxed = last_boxed(text)
    return boxed is not None and answers_match(boxed, answer), score_last_number(text, answer)[0] == 1.0


def evaluate(model: Any, tokenizer: Any, tasks: list[Any], batch_size: int = 128) -> dict[str, float]:
    """Greedy held-out accuracy of `model` (a `transformers` causal LM) on `tasks` (see the module docstring)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    strict = lenient = 0
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(tasks), batch_size):
            batch = tasks[start : start + batch_size]
            prompts = [tokenizer.encode(tokenizer.apply_chat_template(t.init_messages, add_generation_prompt=True, tokenize=False),
                                        add_special_tokens=False) for t in batch]
            width = max(len(p) for p in prompts)
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=EVAL_MAX_TOKENS, do_sample=False, use_cache=True,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            for task, ids in zip(batch, out[:, width:], strict=True):
                is_strict, is_lenient = score(tokenizer.decode(ids, skip_special_tokens=True), task.metadata["answer"])
                strict += is_strict
                lenient += is_lenient
    model.train(was_training)
    return {"lenient": lenient / len(tasks), "strict": strict / len(tasks), "eval_s": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------------- ours


def ours_config(level: str, lr: float, format_weight: float, seed: int, groups: int = 8, max_tokens: int = 128,
                max_staleness: int = 0, torch_compile: bool = False, bf16_weights: bool = False,
                engine_process: bool = False) -> Any:
    import torch
    from agent_env.config import AgentRLConfig

    micro_batch_tokens = 32768 if torch.cuda.is_available() else 4096  # the whole batch in one pass on a GPU

    return AgentRLConfig.model_validate({"ajet": {
        "project_name": "learn_arithmetic",
        "model": {"path": MODEL},
        "task_reader": {"type": "arithmetic", "arithmetic": {"level": level, "num_validation": 1}},
        "data": {"train_batch_size": groups, "max_prompt_length": 256, "max_response_length": max_tokens},
        "rollout": {"env_id": "agent_env/Completion-v0", "num_repeat": GROUP_SIZE, "temperature": 1.0,
                    "max_response_length_in_one_turn": max_tokens, "max_env_worker": groups * GROUP_SIZE,
                    "max_num_seqs": groups * GROUP_SIZE, "gpu_memory_utilization": 0.3, "max_model_len": 512,
                    "engine_process": engine_process},
        "task_judge": {"judge_protocol": "agent_env.judges.last_number:LastNumberJudge",
                       "judge_kwargs": {"format_weight": format_weight}},
        "learner": {"lr": lr, "beta": 0.0, "max_tokens_per_micro_batch": micro_batch_tokens, "torch_compile": torch_compile,
                    "bf16_autocast": False if bf16_weights else None},
        "trainer_common": {"total_training_steps": 1_000_000, "test_freq": 0, "save_freq": 0, "val_before_train": False,
                           "logger": ["console"], "seed": seed, "max_staleness": max_staleness},
    }})


CURVE_KEYS = ("reward/correct", "reward/format", "tokens/response_mean", "learner/entropy")
"""Per-step metrics whose course the result records as ten means (`curves_by_tenth`): the judge's two parts (does
the format take off, and when?), the response length and the policy's entropy (does the answer style collapse?)."""

SPLIT_KEYS = ("timing/rollout_s", "timing/rollout_wait_s", "timing/learn_s", "timing/sync_s")
"""A step's phases: collection (with `--max-staleness 1` it runs while the previous step trains), the time the
step waited for it, learning, weight sync."""


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from agent_rl.trainer import Trainer

    config = ours_config(args.level, args.lr, args.format_weight, args.seed, args.groups, args.max_tokens, args.max_staleness,
                         args.torch_compile, args.bf16_weights, args.engine_process)
    held = heldout_tasks(args.level, args.heldout)
    started = time.perf_counter()
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="learn_arithmetic_")) / "run")
    tokenizer = trainer.collector.tokenizer
    result: dict[str, Any] = {"setup_s": time.perf_counter() - started, "engine": type(trainer.engine).__name__}
    result["before"] = evaluate(trainer.learner.module, tokenizer, held)
    step_times, rewards, first_ratio = [], [], None
    splits: dict[str, list[float]] = {k: [] for k in (*SPLIT_KEYS, "timing/learner/thread_cpu_s")}
    curves: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}  # per step
    train_started = time.perf_counter()
    try:
        while time.perf_counter() - train_started < args.budget_s:
            metrics = trainer.step()
            step_times.append(metrics["timing/step_s"])
            rewards.append(metrics["reward/mean"])
            for key, values in splits.items():
                values.append(metrics.get(key, 0.0))
            for key, values in curves.items():
                values.append(metrics.get(key, 0.0))
            print(f"step {len(step_times)}: reward {rewards[-1]:.3f}, {step_times[-1]:.2f} s", file=sys.stderr, flush=True)
            if first_ratio is None:
                first_ratio = (metrics.get("learner/ratio/min"), metrics.get("learner/ratio/max"))
                result["first_step_split_s"] = {k: metrics.get(k) for k in SPLIT_KEYS}
        result["train_s"] = time.perf_counter() - train_started
        result["last_step_split_s"] = {k: metrics.get(k) for k in SPLIT_KEYS}
        result["median_split_s"] = {k: statistics.median(v) for k, v in splits.items() if v}
        result["after"] = evaluate(trainer.learner.module, tokenizer, held)
    finally:
        trainer.close()
    result.update(_summary(step_times, rewards))
    result["curves_by_tenth"] = {key: by_tenth(values) for key, values in curves.items() if values}
    result["first_update_ratio"] = first_ratio
    return result


# ---------------------------------------------------------------------------------------------------- TRL


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    """TRL's `GRPOTrainer` on the same work (our own runner; the anchor's settings)."""
    import torch
    import trl
    from agent_env.tasks.arithmetic import ArithmeticTasks
    from agent_rl.embedded_model import resolve_model_path
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29555")
    cuda = torch.cuda.is_available()
    use_vllm = cuda and _has_vllm()
    path = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    held = heldout_tasks(args.level, args.heldout)
    train_rows = [{"prompt": t.init_messages, "answer": t.metadata["answer"]} for t in ArithmeticTasks(args.level, "train")]
    format_weight = args.format_weight

    def reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:  # LastNumberJudge's reward
        from agent_env.judges.last_number import score_last_number

        out = []
        for completion, gold in zip(completions, answer, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            correct, fmt = score_last_number(text, gold)
            out.append(correct + format_weight * fmt)
        return out

    step_times: list[float] = []

    class Budget(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.step_started = 0.0

        def on_step_begin(self, args_, state, control, **kw):  # noqa: ANN001
            self.step_started = time.perf_counter()
            self.started = self.started or self.step_started

        def on_step_end(self, args_, state, control, **kw):  # noqa: ANN001
            now = time.perf_counter()
            step_times.append(now - self.step_started)
            print(f"step {len(step_times)}: {step_times[-1]:.2f} s", file=sys.stderr, flush=True)
            if now - self.started > budget:
                control.should_training_stop = True

    budget = args.budget_s
    started = time.perf_counter()
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if cuda:
        model = model.cuda()
    result: dict[str, Any] = {"trl": trl.__version__, "engine": "vllm colocate" if use_vllm else "transformers generate"}
    result["before"] = evaluate(model, tokenizer, held)
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_grpo_"), per_device_train_batch_size=args.groups * GROUP_SIZE,
        num_generations=GROUP_SIZE, max_completion_length=args.max_tokens, learning_rate=args.lr, beta=0.0, temperature=1.0,
        bf16=cuda, use_cpu=not cuda, logging_steps=1, max_steps=1_000_000, save_strategy="no", report_to=[],
        gradient_checkpointing=False, seed=args.seed, disable_tqdm=True, log_level="error",
        **({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3} if use_vllm else {}),
    )
    trainer = GRPOTrainer(model=path if use_vllm else model, reward_funcs=[reward], args=config,
                          train_dataset=Dataset.from_list(train_rows), processing_class=tokenizer, callbacks=[Budget()])
    result["setup_s"] = time.perf_counter() - started
    train_started = time.perf_counter()
    trainer.train()
    result["train_s"] = time.perf_counter() - train_started
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    result["after"] = evaluate(trainer.model, tokenizer, held)
    result.update(_summary(step_times, rewards))
    return result


def _has_vllm() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _summary(step_times: list[float], rewards: list[float]) -> dict[str, Any]:
    tenth = max(1, len(rewards) // 10)
    return {"steps": len(step_times), "step_s_median": statistics.median(step_times) if step_times else None,
            "reward_first_tenth": sum(rewards[:tenth]) / tenth if rewards else None,
            "reward_last_tenth": sum(rewards[-tenth:]) / tenth if rewards else None}


# ---------------------------------------------------------------------------------------------------- report


def report(paths: list[str], write: bool) -> str:
    """The results as markdown, one table per machine (a GPU host's runs and a CPU run are not comparable)."""
    rows = [json.loads(Path(p).read_text()) for p in paths]
    header = ["| runner | engine | level | batch | format weight | budget s | steps | median s/step | median collect / wait / learn / sync s | lenient before → after | strict before → after | reward first → last tenth |",
              "|---|---|---|---|---:|---:|---:|---:|---|---|---|---|"]
    tables = []
    for machine in dict.fromkeys(r.get("machine", "") for r in rows):
        lines = [f"On {machine}:", "", *header]
        for r in sorted((r for r in rows if r.get("machine", "") == machine), key=lambda r: (r["level"], r["format_weight"], r["runner"])):
            step = f"{r['step_s_median']:.2f}" if r.get("step_s_median") else "–"
            reward = f"{r['reward_first_tenth']:.2f} → {r['reward_last_tenth']:.2f}" if r.get("reward_first_tenth") is not None else "–"
            batch = f"{r.get('groups', 8)}×{GROUP_SIZE}, ≤{r.get('max_tokens', 128)} tok"
            runner = r["runner"] + (" (1 step stale)" if r.get("max_staleness") else "") + (" (compiled)" if r.get("torch_compile") else "")
            runner += " (DeepSpeed bf16 weights)" if r.get("bf16_weights") else ""
            runner += " (engine process)" if r.get("engine_process") else ""
            split = r.get("median_split_s")
            phases = " / ".join(f"{split.get(k, 0.0):.3f}" for k in SPLIT_KEYS) if split else "–"
            lines.append(f"| {runner} | {r['engine']} | {r['level']} | {batch} | {r['format_weight']} | {r['budget_s']:.0f} | {r['steps']} | {step} | {phases} | "
                         f"{r['before']['lenient']:.1%} → {r['after']['lenient']:.1%} | {r['before']['strict']:.1%} → {r['after']['strict']:.1%} | {reward} |")
        tables.append("\n".join(lines))
    body = "\n\n".join(tables)
    if write:
        from _results import write_section

        write_section("Learning arithmetic (benchmarks/learn_arithmetic.py)", body, machine="the machines named above each table")
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", choices=["ours", "trl"], default="ours")
    parser.add_argument("--level", choices=["easy", "mix"], default="easy")
    parser.add_argument("--budget-s", type=float, default=240.0, help="training wall-clock budget")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--format-weight", type=float, default=0.0, help="reward for a number in \\boxed{} (0: the anchor's reward)")
    parser.add_argument("--groups", type=int, default=8, help="prompts per step (each with 8 completions)")
    parser.add_argument("--max-tokens", type=int, default=128, help="most tokens per training completion")
    parser.add_argument("--heldout", type=int, default=256, help="held-out problems (validation split)")
    parser.add_argument("--max-staleness", type=int, choices=(0, 1), default=0,
                        help="ours only: 1 collects step k+1 while step k trains (one step stale, TIS-corrected)")
    parser.add_argument("--torch-compile", action="store_true", help="ours only: the learner's compiled decoder layers")
    parser.add_argument("--engine-process", action="store_true",
                        help="ours only: the rollout engine in a process of its own (rollout.engine_process)")
    parser.add_argument("--bf16-weights", action="store_true",
                        help="ours only: DeepSpeed's bf16 mode (bf16 weights, float32 master copy) instead of the GPU default, "
                             "float32 weights under bf16 autocast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--report", nargs="+", metavar="JSON", help="render these results (and write RESULTS.md unless --no-write)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.report:
        print(report(args.report, write=not args.no_write))
        return
    import torch
    from _results import machine_description

    if torch.cuda.is_available():
        os.environ.setdefault("BENCH_GPU_NAME", torch.cuda.get_device_name(0))

    if args.runner == "trl" and (args.max_staleness or args.torch_compile or args.bf16_weights or args.engine_process):
        parser.error("--max-staleness, --torch-compile, --bf16-weights and --engine-process are options of our trainer (--runner ours).")
    result = {"runner": args.runner, "level": args.level, "budget_s": args.budget_s, "lr": args.lr, "groups": args.groups,
              "max_tokens": args.max_tokens, "max_staleness": args.max_staleness, "torch_compile": args.torch_compile,
              "bf16_weights": args.bf16_weights, "engine_process": args.engine_process,
              "format_weight": args.format_weight, "heldout": args.heldout, "machine": machine_description()}
    result.update((run_ours if args.runner == "ours" else run_trl)(args))
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
