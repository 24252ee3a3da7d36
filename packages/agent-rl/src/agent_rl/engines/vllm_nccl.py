"""The learner's end of NCCL weight sync to a vLLM engine on other GPUs, and putting that engine on its GPUs.

Protocol (driven by `VLLMEngine.update_weights` with `weight_sync="nccl"`):
  1. once: the learner's rank-0 process and every vLLM worker (over `collective_rpc`) join a group of
     `1 + workers` ranks through vLLM's `StatelessProcessGroup` (a TCP store of its own, apart from the
     learner's torch.distributed group) and a `PyNcclCommunicator`; the learner is rank 0;
  2. per sync, per bucket (`agent_rl.engines.weight_broadcast.pack_buckets`): the workers are told the bucket's
     layout by `collective_rpc` while the learner broadcasts the packed buffer; each worker loads it with the
     model's `load_weights`; then the prefix cache is reset.

Why not vLLM's built-in `weight_transfer_config={"backend": "nccl"}`: it is built on the same two vLLM pieces,
but its engine-side API changed between 0.22, 0.25 and 0.29 (two-phase, then four-phase with
`start_weight_update`/`finish_weight_update`, then a trainer-side engine), while `StatelessProcessGroup` and
`PyNcclCommunicator` stayed put; and it broadcasts tensor by tensor unless packed. This module needs vLLM only
when a group is made.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Sequence

import torch


class NcclWeightSender:
    """Rank 0 of the weight-broadcast group, on the learner's GPU. Make it with `connect` while the workers join."""

    def __init__(self, communicator: object, device: torch.device) -> None:
        self._communicator = communicator
        self.device = device

    @classmethod
    def connect(cls, host: str, port: int, world_size: int, device: torch.device) -> NcclWeightSender:
        """Create the group's store on `host:port` and its NCCL communicator; blocks until all `world_size`
        members have joined (run it in a thread while the workers join through `collective_rpc`)."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=host, port=port, rank=0, world_size=world_size)
        with torch.cuda.device(device):
            return cls(PyNcclCommunicator(group, device=device), device)

    def broadcast(self, flat: torch.Tensor) -> None:
        """Send `flat` (on this sender's GPU) to every worker and wait until it has gone."""
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            self._communicator.broadcast(flat, src=0, stream=stream)  # type: ignore[attr-defined]
            stream.synchronize()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for the group's store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def engine_gpus_visible(devices: Sequence[int] | None) -> Iterator[None]:
    """While the engine starts its processes, they see only `devices` (indices as this process sees them) and
    NCCL's NVLink multicast stays off in them (`NCCL_NVLS_ENABLE=0` unless set). Restores the environment after.

    vLLM's engine core and workers are spawned with this process's environment, so this is how the engine gets
    GPUs other than the learner's. `devices=None` leaves the visible GPUs alone.
    """
    saved = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "NCCL_NVLS_ENABLE")}
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(physical_gpu_ids(devices))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def physical_gpu_ids(devices: Sequence[int]) -> list[str]:
    """The `CUDA_VISIBLE_DEVICES` entries of `devices`, which are indices into this process's visible GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else None
    count = len(entries) if entries is not None else torch.cuda.device_count()
    bad = [d for d in devices if not 0 <= d < count]
    if bad:
        raise ValueError(
            f"engine GPUs {bad} do not exist: this process sees {count} GPU(s) (0..{count - 1}). Set "
            "ajet.rollout.engine_gpus to indices of this node's GPUs that the learner's ranks do not use."
        )
    return [entries[d] if entries is not None else str(d) for d in devices]


__all__ = ["NcclWeightSender", "engine_gpus_visible", "free_port", "physical_gpu_ids"]
