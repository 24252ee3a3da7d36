"""The trainer's processes: which rank this is, the rank-0-collects / every-rank-trains split, and GPU placement.

Data-parallel training (`torchrun --nproc-per-node N agent-rl train config.yaml`, or the `deepspeed` launcher):
rank 0 owns the rollout engine and the collector, collects each step's batch and broadcasts its samples; every
rank calls `Learner.train_step` on that same global batch and trains its share of it (the learner's contract);
rank 0 syncs the engine and writes the run directory; other ranks write nothing. One engine serves the
whole run, so rollout speed grows with the engine's GPUs (`ajet.rollout.placement: separate`), learning speed
with the learner's ranks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

ROLLOUT_WAIT_TIMEOUT = timedelta(hours=12)
"""How long the other ranks wait in `Ranks.broadcast` for rank 0 (its collection, validation, checkpoint): a
gloo group of its own, so neither NCCL's watchdog nor DeepSpeed's 10-minute default ends a long rollout."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the training job: global `rank` of `world_size`, `local_rank` of
    `local_world_size` on its node. Rank 0 is the main process. `group`: the gloo group `broadcast` uses
    (None: the default group)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (pickled; a collective: every rank calls it). A group of one returns it."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0, group=self.group)
        return holder[0]  # type: ignore[return-value]


def join_process_group() -> Ranks:
    """Join the launcher's process group (a group of one in a plain `python` process) and say where this process is.

    NCCL's NVLink multicast is turned off for this process and those it starts (`NCCL_NVLS_ENABLE=0` unless set)
    before any NCCL communicator exists. With several ranks, a gloo group with `ROLLOUT_WAIT_TIMEOUT` is made
    for `Ranks.broadcast` (a collective: every rank calls this once).
    """
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    import torch.distributed as dist

    from agent_rl.learner.engine_setup import ensure_distributed

    ensure_distributed()
    world_size = dist.get_world_size()
    group = dist.new_group(backend="gloo", timeout=ROLLOUT_WAIT_TIMEOUT) if world_size > 1 else None
    return Ranks(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        # torchrun sets LOCAL_WORLD_SIZE, the deepspeed launcher LOCAL_SIZE
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or world_size),
        group=group,
    )


def resolve_engine_gpus(engine_gpus: Sequence[int] | None, ranks: Ranks, gpu_count: int) -> list[int]:
    """The GPUs (indices on rank 0's node) of a `placement: separate` engine: `engine_gpus`, or the last GPU.

    Refuses GPUs that do not exist or that a learner rank of this node uses (local ranks 0..local_world_size-1
    take GPUs 0..local_world_size-1), naming the launch that fits.
    """
    if gpu_count == 0:
        raise ValueError(
            "ajet.rollout.placement is `separate` but this machine has no GPU: the engine needs GPUs of its own. Use "
            "placement: colocated on the CPU."
        )
    chosen = list(engine_gpus) if engine_gpus is not None else [gpu_count - 1]
    missing = [g for g in chosen if not 0 <= g < gpu_count]
    if missing:
        raise ValueError(f"ajet.rollout.engine_gpus has {missing}, but this node has GPUs 0..{gpu_count - 1}.")
    taken = sorted(set(chosen) & set(range(ranks.local_world_size)))
    if taken:
        learner_gpus = gpu_count - len(chosen)
        raise ValueError(
            f"ajet.rollout.engine_gpus {chosen} overlaps the GPUs of the learner's {ranks.local_world_size} rank(s) on "
            f"this node (GPUs 0..{ranks.local_world_size - 1}; local rank i trains on GPU i). Give the engine the "
            f"last GPUs and launch `torchrun --nproc-per-node {max(1, learner_gpus)} ...`, e.g. engine_gpus: "
            f"{list(range(gpu_count - len(chosen), gpu_count))}."
        )
    return chosen


def launch_mismatch(n_gpus_per_node: int, nnodes: int, ranks: Ranks, engine_gpus: int) -> str | None:
    """A note when the config's `n_gpus_per_node`/`nnodes` ask for more learner processes than were launched."""
    expected = max(1, n_gpus_per_node - engine_gpus) * nnodes
    if expected <= ranks.world_size:
        return None
    return (
        f"ajet.trainer_common asks for {nnodes} node(s) × {n_gpus_per_node} GPU(s) ({engine_gpus} of them for the "
        f"engine), but this run has {ranks.world_size} learner process(es). To use them all, launch `torchrun "
        f"--nnodes {nnodes} --nproc-per-node {max(1, n_gpus_per_node - engine_gpus)} -m agent_cli.main train ...` "
        "(README, \"Several GPUs\")."
    )


def drain(items: Any) -> None:
    """Iterate `items` to the end, dropping them (a non-main rank's part in a collective iterator)."""
    for _ in items:
        pass


__all__ = ["Ranks", "drain", "join_process_group", "launch_mismatch", "resolve_engine_gpus"]
