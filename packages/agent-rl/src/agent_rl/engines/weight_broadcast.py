"""Weights sent by broadcast in packed buckets: the layout both ends agree on, packing, and receiving.

The sender copies the weights, in order and cast to the receiver's dtype, into one flat buffer of about
`bucket_bytes` and broadcasts it; the receiver, told the bucket's `Layout` by another channel (vLLM's
`collective_rpc`), allocates the same buffer, receives it and cuts it back into named tensors. One broadcast per
bucket instead of one per tensor. The transport is any `broadcast(tensor)` callable: NCCL between GPUs
(`agent_rl.engines.vllm_nccl`), gloo on the CPU in tests. This module imports only torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch

DEFAULT_BUCKET_BYTES = 512 * 2**20
"""Bytes per broadcast: bounds the extra memory of a sync on each end (one buffer of this size)."""

Layout = list[list]
"""One bucket's contents, msgpack-safe: `[[hf_name, shape, offset], ...]`, offsets in elements of the flat buffer."""


def layout_numel(layout: Layout) -> int:
    """Elements of the flat buffer that holds `layout`'s tensors."""
    name, shape, offset = layout[-1]
    return offset + math.prod(shape)


def pack_buckets(
    weights: Iterable[tuple[str, torch.Tensor]],
    dtype: torch.dtype,
    device: torch.device | str,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> Iterator[tuple[Layout, torch.Tensor]]:
    """Yield `(layout, flat)` buckets holding `weights` in order, cast to `dtype` on `device`.

    Each tensor is copied into the bucket as soon as it arrives, so `weights` may invalidate a tensor once the
    next one is requested (ZeRO-3 gathers do). A tensor larger than `bucket_bytes` gets a bucket of its own.
    The flat buffer is reused for the next bucket: finish sending it (a completed broadcast) before resuming.
    """
    capacity = max(1, bucket_bytes // torch.empty((), dtype=dtype).element_size())
    buffer = torch.empty(capacity, dtype=dtype, device=device)
    layout: Layout = []
    used = 0
    for name, tensor in weights:
        numel = tensor.numel()
        if layout and used + numel > capacity:
            yield layout, buffer[:used]
            layout, used = [], 0
        if numel > capacity:
            flat = tensor.detach().to(device=device, dtype=dtype, copy=True).reshape(-1)
            yield [[name, list(tensor.shape), 0]], flat
            continue
        buffer[used : used + numel].copy_(tensor.detach().reshape(-1))
        layout.append([name, list(tensor.shape), used])
        used += numel
    if layout:
        yield layout, buffer[:used]


def unpack_bucket(flat: torch.Tensor, layout: Layout) -> list[tuple[str, torch.Tensor]]:
    """The named tensors of a bucket, as views of `flat`."""
    return [(name, flat[offset : offset + math.prod(shape)].view(shape)) for name, shape, offset in layout]


def receive_bucket(
    layout: Layout,
    dtype: torch.dtype,
    device: torch.device | str,
    broadcast: Callable[[torch.Tensor], None],
) -> list[tuple[str, torch.Tensor]]:
    """The receiving end of one `pack_buckets` bucket: allocate its buffer, fill it by `broadcast`, unpack it."""
    flat = torch.empty(layout_numel(layout), dtype=dtype, device=device)
    broadcast(flat)
    return unpack_bucket(flat, layout)


__all__ = ["DEFAULT_BUCKET_BYTES", "Layout", "layout_numel", "pack_buckets", "receive_bucket", "unpack_bucket"]
