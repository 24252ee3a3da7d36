"""Does the tutorial's math agent learn to use its python tool? Held-out accuracy and tool use before and after.

    python benchmarks/learn_tool_use.py --runner baseline --json out/baseline.json      # untrained model, perfect tool user
    python benchmarks/learn_tool_use.py --runner cold-start --init-dir out/init --json out/cold_start.json
    python benchmarks/learn_tool_use.py --runner ours --init-dir out/init --budget-s 300 --json out/ours.json
    python benchmarks/learn_tool_use.py --runner trl  --init-dir out/init --budget-s 300 --json out/trl.json
    python benchmarks/learn_tool_use.py --report out/*.json                             # rewrites the RESULTS.md section

The agent is the tutorial's (`examples/math_agent/workflow.py`, unchanged: an agentscope ReActAgent with the
python tool, `max_iters=2`), run in the sandbox, judged by `MathAnswerAsJudge`, on the built-in `calculator`
arithmetic tasks (3-4 digit products, sums of 4-digit numbers, powers, remainders: `What is 4821 * 937?`), which
a 135M model cannot do in its head and one python call does. The model is the embedded SmolLM2-135M-Instruct.

Runners (one per process):
- `baseline`: the untrained model on the held-out tasks without a tool (the plain question, the anchor's system
  prompt) and as the agent (tool schema rendered), and the perfect tool user (`agent_env.policies.
  scripted_math_policy`) through the same env, sandbox and judge.
- `cold-start`: the recipe's first step: `--demos` episodes of the perfect tool user on training tasks, then
  `--sft-epochs` passes of supervised steps on their turns (`agent_rl.cold_start`, as `ajet.cold_start` does in a
  training run); saves the weights to `--init-dir` and evaluates them. Both trainers below start from there.
- `ours`: GRPO with `agent_rl.Trainer` from `--init-dir`: vLLM colocated on a GPU (the HF engine on the CPU).
- `trl`: TRL's `GRPOTrainer` in its multi-turn tool mode (`tools=[execute_python_code]`, running the code in our
  sandbox; `trl_tool_use.py`) from `--init-dir`, same tasks, chat template, reward, batch and budget.

Training stops at the first step that ends after `--budget-s` seconds (set-up and evaluation not counted). The
held-out evaluation is the same for every runner: the agent on the first `--heldout` validation tasks, greedy, one
episode each, through our collector with the HF engine on the saved weights: accuracy (the judge's success), the share
of episodes with a tool call and with one that ran, turns, parse errors and failed runs per episode.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
WORKFLOW = str(Path(__file__).resolve().parents[1] / "examples/math_agent/workflow.py") + "->MathAgentWorkflow"
GROUP_SIZE = 8
MAX_RESPONSE_TOKENS = 256
"""Most tokens after the first prompt in one episode, sampled and inserted (tool outputs): our `data.max_response_length`
and TRL's `max_completion_length`, which bounds its whole multi-turn completion (TRL has no per-turn limit)."""

CURVE_KEYS = ("reward/mean", "rollout/tool_call_rate", "rollout/tool_ran_rate", "rollout/turns_mean",
              "rollout/tool_call_errors_per_episode", "rollout/tool_failures_per_episode", "tokens/generated",
              "tokens/inserted_mean", "learner/entropy")
"""Per-step metrics recorded as ten means (`curves_by_tenth`): accuracy on the training episodes (`reward/mean`: the
judge gives 1 for a right answer, else 0), tool-call rate, tool calls that ran, turns per episode, tool-call parse
errors and failed runs per episode, sampled tokens per step and inserted (tool output and template) tokens per
sample, entropy."""


def tool_use_config(args: argparse.Namespace, model: str, *, cold_start: bool = False) -> Any:
    """The training config of the math agent on the calculator tasks (`examples/tool_use/tool_use.yaml`'s, sized by `args`)."""
    import torch
    from agent_env.config import AgentRLConfig

    cuda = torch.cuda.is_available()
    groups = args.groups
    return AgentRLConfig.model_validate({"ajet": {
        "project_name": "learn_tool_use",
        "model": {"path": model},
        "task_reader": {"type": "arithmetic", "arithmetic": {"level": "calculator", "num_validation": args.heldout}},
        "data": {"train_batch_size": groups, "max_prompt_length": 1024, "max_response_length": MAX_RESPONSE_TOKENS},
        "rollout": {"agentscope_workflow": WORKFLOW, "num_repeat": GROUP_SIZE, "temperature": 1.0,
                    "max_response_length_in_one_turn": args.max_tokens, "max_env_worker": groups * GROUP_SIZE,
                    "max_num_seqs": groups * GROUP_SIZE, "gpu_memory_utilization": 0.3, "max_model_len": 2048,
                    "multi_turn": {"max_steps": 3}},
        "task_judge": {"judge_protocol": "agent_env.judges.math:MathAnswerAsJudge"},
        "cold_start": {"policy": "agent_env.policies:scripted_math_policy" if cold_start else None,
                       "num_tasks": args.demos, "epochs": args.sft_epochs, "batch_size": args.sft_batch, "lr": args.sft_lr},
        "learner": {"lr": args.lr, "beta": 0.0, "max_tokens_per_micro_batch": 65536 if cuda else 8192},
        "trainer_common": {"total_training_steps": 1_000_000, "test_freq": 0, "save_freq": 0, "val_before_train": False,
                           "logger": ["console"], "seed": args.seed, "max_staleness": args.max_staleness},
    }})


def evaluate(config: Any, engine: Any, tokenizer: Any, max_tokens: int) -> dict[str, float]:
    """The agent of `config` on its first `num_validation` validation tasks: greedy, one episode each (see the module docstring)."""
    from agent_env.from_config import tasks_from_config
    from agent_rl.engines.base import SamplingParams
    from agent_rl.rollout.from_config import build_collector

    collector = build_collector(config, engine, tokenizer)
    started = time.perf_counter()
    tasks = list(tasks_from_config(config, "validation"))
    try:
        batch = _run(collector.collect(tasks, 1, seed=0, sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens)))
    finally:
        collector.close()
    return episode_summary(batch) | {"eval_s": time.perf_counter() - started}


def episode_summary(batch: Any) -> dict[str, float]:
    """The held-out numbers of a collected batch, from its rollout metrics."""
    metrics = batch.metrics()
    keys = {"accuracy": "reward/success_rate", "tool_call_rate": "rollout/tool_call_rate", "tool_ran_rate": "rollout/tool_ran_rate",
            "turns_mean": "rollout/turns_mean", "parse_errors_per_episode": "rollout/tool_call_errors_per_episode",
            "failed_runs_per_episode": "rollout/tool_failures_per_episode", "failed_episodes": "rollout/failed_episodes",
            "episodes": "rollout/episodes"}
    return {name: metrics[key] for name, key in keys.items()}


def evaluate_model(args: argparse.Namespace, model: str) -> dict[str, float]:
    """`evaluate` with the HF engine on the weights in `model` (the same evaluator for every runner)."""
    from agent_rl.engines.hf import HFEngine

    engine = HFEngine(model, seed=0)
    try:
        return evaluate(tool_use_config(args, model), engine, engine.tokenizer, args.max_tokens)
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------------- runners


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    from agent_env.config import AgentRLConfig
    from agent_env.policies import scripted_math_policy
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.scripted import ScriptedEngine

    agent = tool_use_config(args, MODEL)
    tree = agent.to_yaml_dict()
    tree["ajet"]["rollout"] |= {"env_id": "agent_env/Completion-v0", "agentscope_workflow": None}
    plain = AgentRLConfig.model_validate(tree)
    engine = HFEngine(MODEL, seed=0)
    try:
        result = {"no_tool": evaluate(plain, engine, engine.tokenizer, args.max_tokens),
                  "agent": evaluate(agent, engine, engine.tokenizer, args.max_tokens)}
    finally:
        engine.close()
    scripted = ScriptedEngine(engine.tokenizer, scripted_math_policy)
    result["perfect_tool_user"] = evaluate(agent, scripted, engine.tokenizer, args.max_tokens)
    return result


def run_cold_start(args: argparse.Namespace) -> dict[str, Any]:
    """Demonstrations and supervised steps with a standalone `Learner` (what `ajet.cold_start` does), saved to `--init-dir`."""
    from agent_env.from_config import tasks_from_config
    from agent_rl.cold_start import collect_demonstrations, demonstration_tasks, fine_tune
    from agent_rl.embedded_model import resolve_model_path
    from agent_rl.learner import Learner, LearnerConfig
    from transformers import AutoTokenizer

    config = tool_use_config(args, MODEL, cold_start=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MODEL))
    learner = Learner(MODEL, LearnerConfig.model_validate(config.ajet.learner.model_dump() | {"temperature": 1.0}))
    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    tasks = demonstration_tasks(tasks_from_config(config, "train"), args.demos, args.seed)
    batch = collect_demonstrations(config, tokenizer, tasks, loop)
    demonstrations = [s for e in batch.episodes if e.is_success for s in e.samples]
    collected = time.perf_counter()
    metrics = fine_tune(learner, demonstrations, epochs=args.sft_epochs, batch_size=args.sft_batch, lr=args.sft_lr, seed=args.seed)
    tuned = time.perf_counter()
    learner.save_pretrained(args.init_dir)
    result = {"demonstrations": len(demonstrations), "demonstrations_s": collected - started, "sft_s": tuned - collected,
              "cold_start_s": tuned - started, "sft": metrics}
    del learner
    result["after"] = evaluate_model(args, args.init_dir)
    return result


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from agent_rl.trainer import Trainer

    config = tool_use_config(args, args.init_dir)
    started = time.perf_counter()
    run_dir = Path(tempfile.mkdtemp(prefix="learn_tool_use_")) / "run"
    trainer = Trainer(config, run_dir)
    tokenizer = trainer.collector.tokenizer
    result: dict[str, Any] = {"setup_s": time.perf_counter() - started, "engine": type(trainer.engine).__name__}
    step_times: list[float] = []
    curves: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}
    first: dict[str, float] | None = None
    exactness = {"fallback_samples": 0.0, "failed_episodes": 0.0}
    final = str(run_dir.parent / "final")
    train_started = time.perf_counter()
    try:
        while time.perf_counter() - train_started < args.budget_s:
            metrics = trainer.step()
            step_times.append(metrics["timing/step_s"])
            for key, values in curves.items():
                values.append(metrics.get(key, 0.0))
            exactness["fallback_samples"] += metrics.get("rollout/fallback_samples", 0.0)
            exactness["failed_episodes"] += metrics.get("rollout/failed_episodes", 0.0)
            first = first or {k: metrics.get(k) for k in ("learner/ratio/min", "learner/ratio/max", "learner/ratio/mean")}
            print(f"step {len(step_times)}: reward {metrics['reward/mean']:.3f} tool calls {metrics['rollout/tool_call_rate']:.2f} "
                  f"{step_times[-1]:.2f} s", file=sys.stderr, flush=True)
        result["train_s"] = time.perf_counter() - train_started
        trainer.learner.save_pretrained(final)
    finally:
        trainer.close()
    result["before"] = evaluate_model(args, args.init_dir)
    result["after"] = evaluate_model(args, final)
    result["steps"] = len(step_times)
    result["step_s_median"] = statistics.median(step_times) if step_times else None
    result["curves_by_tenth"] = {key: by_tenth(values) for key, values in curves.items() if values}
    result["first_update_ratio"] = first
    result["exactness"] = exactness | trajectory_exactness(run_dir / "trajectories", tokenizer)
    return result


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    from agent_env.tasks.arithmetic import ArithmeticTasks
    from trl_tool_use import run_trl as train_with_trl

    started = time.perf_counter()
    out = train_with_trl(args.init_dir, list(ArithmeticTasks("calculator", "train")), groups=args.groups, group_size=GROUP_SIZE,
                         max_tokens=MAX_RESPONSE_TOKENS, lr=args.lr, budget_s=args.budget_s, temperature=1.0, seed=args.seed,
                         out_dir=tempfile.mkdtemp(prefix="trl_tool_use_"), max_tool_calls=2,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
    result: dict[str, Any] = {"engine": f"TRL {out['engine']}", "trl_s": time.perf_counter() - started}
    result |= {k: v for k, v in out.items() if k != "step_times"}
    result["step_s_median"] = out.get("median_step_s")
    result["before"] = evaluate_model(args, args.init_dir)
    result["after"] = evaluate_model(args, out["model_dir"])
    return result


# ---------------------------------------------------------------------------------------------------- exactness


def trajectory_exactness(directory: Path, tokenizer: Any) -> dict[str, float]:
    """Token accounting checked on a run's own trajectories (every `step_N.jsonl`):

    - `trained_tokens`, `inserted_tokens`: loss mask 1 / 0 in the responses;
    - `inserted_runs_not_template`: inserted runs (maximal stretches of loss mask 0) that are not what the ChatML
      template puts between two assistant turns: from the end of a turn (`<|im_end|>`, when the model's turn was
      cut before it) through `<|im_start|>` of the next message(s) to the next `<|im_start|>assistant\n` (must
      be 0: everything else the env or template added would be in a trained run);
    - `trained_runs_not_ending_turn`: trained runs that do not end with the end-of-turn token while the turn was
      not cut by the length limit (must be 0 unless the sample was truncated);
    - `trained_without_logprob`: trained tokens whose sampling logprob is missing (exactly 0.0: must be 0);
    - `inserted_with_logprob`: inserted tokens with a nonzero logprob (must be 0).
    """
    counts = dict.fromkeys(("samples", "trained_tokens", "inserted_tokens", "inserted_runs_not_template",
                            "trained_runs_not_ending_turn", "trained_without_logprob", "inserted_with_logprob"), 0)
    end_of_turn = tokenizer.eos_token_id
    for path in sorted(directory.glob("step_*.jsonl")):
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            counts["samples"] += 1
            mask, ids, logprobs = sample["loss_mask"], sample["response_ids"], sample["logprobs"]
            counts["trained_tokens"] += sum(mask)
            counts["inserted_tokens"] += len(mask) - sum(mask)
            counts["trained_without_logprob"] += sum(1 for m, lp in zip(mask, logprobs, strict=True) if m and lp == 0.0)
            counts["inserted_with_logprob"] += sum(1 for m, lp in zip(mask, logprobs, strict=True) if not m and lp != 0.0)
            for trained, run in itertools.groupby(zip(mask, ids, strict=True), key=lambda pair: pair[0]):
                run_ids = [token for _, token in run]
                if trained:
                    counts["trained_runs_not_ending_turn"] += run_ids[-1] != end_of_turn and not sample["response_truncated"]
                    continue
                text = tokenizer.decode(run_ids).removeprefix("<|im_end|>")
                counts["inserted_runs_not_template"] += not (text.startswith("\n<|im_start|>") and text.endswith("<|im_start|>assistant\n"))
    return {key: float(value) for key, value in counts.items()}


# ---------------------------------------------------------------------------------------------------- helpers


def _run(coroutine: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# ---------------------------------------------------------------------------------------------------- report


def report(paths: list[str], write: bool) -> str:
    """The results as markdown, one table per machine."""
    rows = [json.loads(Path(p).read_text()) for p in paths]

    def cell(summary: dict[str, float] | None) -> str:
        if not summary:
            return "–"
        return (f"{summary['accuracy']:.1%} acc, {summary['tool_call_rate']:.0%} call / {summary['tool_ran_rate']:.0%} ran, "
                f"{summary['turns_mean']:.2f} turns")

    header = ["| runner | engine | batch | budget s | steps | median s/step | held-out before | held-out after |",
              "|---|---|---|---:|---:|---:|---|---|"]
    tables = []
    for machine in dict.fromkeys(r.get("machine", "") for r in rows):
        lines = [f"On {machine}:", "", *header]
        for r in (r for r in rows if r.get("machine", "") == machine):
            if r["runner"] == "baseline":
                for name in ("no_tool", "agent", "perfect_tool_user"):
                    lines.append(f"| baseline: {name.replace('_', ' ')} | – | – | – | – | – | {cell(r[name])} | – |")
                continue
            if r["runner"] == "cold-start":
                lines.append(f"| cold start: {r['demonstrations']} demonstrations, {r['sft']['sft/steps']:.0f} supervised steps "
                             f"({r['cold_start_s']:.1f} s) | – | – | – | – | – | base model | {cell(r['after'])} |")
                continue
            step = f"{r['step_s_median']:.2f}" if r.get("step_s_median") else "–"
            runner = r["runner"] + (f" ({r['judge']})" if r.get("judge") else "")
            lines.append(f"| {runner} | {r.get('engine', '–')} | {r['groups']}×{GROUP_SIZE}, ≤{r['max_tokens']} tok/turn | "
                         f"{r['budget_s']:.0f} | {r.get('steps', '–')} | {step} | {cell(r.get('before'))} | {cell(r.get('after'))} |")
        tables.append("\n".join(lines))
    body = "\n\n".join(tables)
    if write:
        from _results import write_section

        write_section("Learning to use a tool (benchmarks/learn_tool_use.py)", body, machine="the machines named above each table")
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", choices=["baseline", "cold-start", "ours", "trl"], default="ours")
    parser.add_argument("--init-dir", help="the cold start's weights: written by --runner cold-start, read by ours and trl")
    parser.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock budget")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--groups", type=int, default=8, help="tasks per step (each with 8 episodes)")
    parser.add_argument("--max-tokens", type=int, default=128, help="most tokens the model samples per turn")
    parser.add_argument("--max-staleness", type=int, choices=(0, 1), default=0, help="ours only: 1 collects step k+1 while step k trains")
    parser.add_argument("--heldout", type=int, default=64, help="held-out tasks (validation split)")
    parser.add_argument("--demos", type=int, default=16, help="cold start: episodes of the perfect tool user")
    parser.add_argument("--sft-epochs", type=int, default=1, help="cold start: passes over the demonstrations")
    parser.add_argument("--sft-batch", type=int, default=8, help="cold start: demonstrations per supervised step")
    parser.add_argument("--sft-lr", type=float, default=1e-4, help="cold start: learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--report", nargs="+", metavar="JSON", help="render these results (and write RESULTS.md unless --no-write)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.report:
        print(report(args.report, write=not args.no_write))
        return
    if args.runner != "baseline" and not args.init_dir:
        parser.error(f"--runner {args.runner} needs --init-dir")
    import torch
    from _results import machine_description

    if torch.cuda.is_available():
        os.environ.setdefault("BENCH_GPU_NAME", torch.cuda.get_device_name(0))
    result = {"runner": args.runner, "budget_s": args.budget_s, "lr": args.lr, "groups": args.groups, "max_tokens": args.max_tokens,
              "max_staleness": args.max_staleness, "heldout": args.heldout, "demos": args.demos, "sft_epochs": args.sft_epochs,
              "sft_lr": args.sft_lr, "seed": args.seed, "machine": machine_description()}
    runners = {"baseline": run_baseline, "cold-start": run_cold_start, "ours": run_ours, "trl": run_trl}
    result.update(runners[args.runner](args))
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
