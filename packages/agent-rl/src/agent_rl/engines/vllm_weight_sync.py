"""Weight updates into a vLLM worker through CUDA IPC: the learner shares GPU tensors, the worker loads them.

vLLM's `AsyncLLM` runs its model in a child process. The learner packs the weights, cast to the engine's dtype,
into one flat GPU buffer per bucket (`agent_rl.engines.weight_broadcast.pack_buckets`); `share_cuda_tensor` turns
that buffer into a handle made only of strings, numbers and bytes (so vLLM's msgpack socket carries it without
pickling, hence without `VLLM_ALLOW_INSECURE_SERIALIZATION`), and `WeightSyncExtension`, injected into vLLM's
worker class through `worker_extension_cls`, opens it on the same GPU without a copy, cuts it into the named
tensors of the bucket's layout and passes them to the model's own `load_weights` (which handles vLLM's fused
q/k/v and gate/up layers). One IPC handle per bucket, not one per tensor: opening a handle costs far more
than the copy. vLLM 0.26's built-in
`"ipc"` weight-transfer backend does the same but imports `ray` at module level and needs pickling.

Separate GPUs (`weight_sync="nccl"`): `agent_rl_join_weight_broadcast` joins each worker to a small NCCL group
with the learner's rank 0 (rank 0 of that group; see `agent_rl.engines.vllm_nccl`), and
`agent_rl_receive_weight_bucket` receives one packed bucket (`agent_rl.engines.weight_broadcast`) and loads it
with the same `load_weights`.

This module imports only torch; vLLM imports it inside its worker process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import torch

WORKER_EXTENSION = f"{__name__}.WeightSyncExtension"
"""The value for vLLM's `worker_extension_cls` engine argument."""

LOAD_METHOD = "agent_rl_load_shared_bucket"
"""The worker method `collective_rpc` calls with `(layout, handle)`: one packed bucket shared by CUDA IPC."""

JOIN_BROADCAST_METHOD = "agent_rl_join_weight_broadcast"
"""The worker method that joins the NCCL weight-broadcast group: `(host, port, world_size)`."""

RECEIVE_BUCKET_METHOD = "agent_rl_receive_weight_bucket"
"""The worker method that receives and loads one broadcast bucket: `(layout, dtype_name)`."""


def share_cuda_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """A msgpack-safe CUDA IPC handle of `tensor` (contiguous, on a CUDA device). Keep `tensor` alive until
    the receiver has finished with it."""
    from torch.multiprocessing.reductions import reduce_tensor

    if not tensor.is_cuda:
        raise ValueError(f"CUDA IPC shares GPU memory only; got a tensor on {tensor.device}.")
    _, args = reduce_tensor(tensor)
    (_, size, stride, offset, _, dtype, device, handle, storage_bytes, storage_offset, _, ref_handle, ref_offset,
     event_handle, event_sync) = args  # fmt: skip
    return {
        "gpu_uuid": str(torch.cuda.get_device_properties(device).uuid),
        "size": list(size),
        "stride": list(stride),
        "offset": int(offset),
        "dtype": str(dtype).removeprefix("torch."),
        "handle": handle,
        "storage_bytes": int(storage_bytes),
        "storage_offset": int(storage_offset),
        "ref_handle": ref_handle,
        "ref_offset": int(ref_offset),
        "event_handle": event_handle,
        "event_sync": bool(event_sync),
    }


async def share_weights_in_buckets(
    weights: Iterable[tuple[str, torch.Tensor]],
    dtype: torch.dtype,
    bucket_bytes: int,
    load_bucket: Callable[[Any, dict[str, Any]], Awaitable[Any]],
) -> None:
    """Pack `weights`, cast to `dtype`, into flat buckets of about `bucket_bytes` on the current GPU and await
    `load_bucket(layout, handle)` for each, the bucket shared as one CUDA IPC handle (`share_cuda_tensor`).
    `load_bucket` must return once the receiver has read the bucket: the buffer is refilled with the next one."""
    from agent_rl.engines.weight_broadcast import pack_buckets

    device = torch.device("cuda", torch.cuda.current_device())
    buckets = pack_buckets(weights, dtype, device, bucket_bytes)
    for layout, flat in buckets:
        torch.cuda.synchronize()  # the copies must be complete before another process reads them
        await load_bucket(layout, share_cuda_tensor(flat))
        del flat
    del buckets  # frees the packing buffer
    torch.cuda.ipc_collect()


def open_cuda_tensor(shared: dict[str, Any], device: torch.device) -> torch.Tensor:
    """The tensor behind a `share_cuda_tensor` handle, opened on `device` (which must be the same GPU)."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    index = device.index if device.index is not None else torch.cuda.current_device()
    here = str(torch.cuda.get_device_properties(index).uuid)
    if shared["gpu_uuid"] != here:
        raise RuntimeError(
            f"The weights were shared from GPU {shared['gpu_uuid']} but this vLLM worker runs on GPU {here}; "
            "CUDA IPC weight updates need the learner and the engine on the same GPU (colocated mode)."
        )
    return rebuild_cuda_tensor(
        torch.Tensor,
        torch.Size(shared["size"]),
        tuple(shared["stride"]),
        shared["offset"],
        torch.storage.TypedStorage,
        getattr(torch, shared["dtype"]),
        index,
        shared["handle"],
        shared["storage_bytes"],
        shared["storage_offset"],
        False,
        shared["ref_handle"],
        shared["ref_offset"],
        shared["event_handle"],
        shared["event_sync"],
    )


class WeightSyncExtension:
    """Mixed into vLLM's GPU worker class (`worker_extension_cls`): `agent_rl_load_shared_bucket` (CUDA IPC,
    colocated), `agent_rl_join_weight_broadcast` and `agent_rl_receive_weight_bucket` (NCCL, separate GPUs)."""

    def agent_rl_load_shared_bucket(self, layout: list, shared: dict[str, Any]) -> int:
        """Load one packed bucket, shared by `share_cuda_tensor`, into the worker's model; returns how many
        tensors it held."""
        from agent_rl.engines.weight_broadcast import unpack_bucket

        device = self.device  # type: ignore[attr-defined]  # set by vLLM's worker
        flat = open_cuda_tensor(shared, device)
        weights = unpack_bucket(flat, layout)
        self.get_model().load_weights(weights=weights)  # type: ignore[attr-defined]
        torch.cuda.synchronize(device)
        count = len(weights)
        del weights, flat  # release the IPC mapping before the learner reuses or frees the buffer
        return count

    def agent_rl_join_weight_broadcast(self, host: str, port: int, world_size: int) -> int:
        """Join the learner's NCCL weight-broadcast group (the learner is its rank 0; this worker is 1 + its rank
        in the engine). Blocks until every member has joined; returns this worker's rank in the group."""
        import torch.distributed as dist
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        rank = 1 + (dist.get_rank() if dist.is_initialized() else 0)
        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self._agent_rl_broadcast = PyNcclCommunicator(group, device=self.device)  # type: ignore[attr-defined]
        return rank

    def agent_rl_receive_weight_bucket(self, layout: list, dtype_name: str) -> int:
        """Receive one packed bucket from the learner's broadcast and load it; returns how many tensors it held."""
        from agent_rl.engines.weight_broadcast import receive_bucket

        communicator = getattr(self, "_agent_rl_broadcast", None)
        if communicator is None:
            raise RuntimeError("agent_rl_receive_weight_bucket before agent_rl_join_weight_broadcast: join the group first.")
        device = self.device  # type: ignore[attr-defined]

        def broadcast(tensor: torch.Tensor) -> None:
            communicator.broadcast(tensor, src=0, stream=torch.cuda.current_stream(device))

        weights = receive_bucket(layout, getattr(torch, dtype_name), device, broadcast)
        self.get_model().load_weights(weights=weights)  # type: ignore[attr-defined]
        torch.cuda.synchronize(device)
        return len(weights)
