"""The learner's weights under their Hugging Face names, gathered from ZeRO-3 shards and merged with LoRA adapters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

DEFAULT_BUCKET_NUMEL = 64 * 2**20
"""Elements gathered at once under ZeRO-3 (256 MB in float32): bounds the memory a weight sync needs."""

_PEFT_PREFIX = "base_model.model."


@dataclass
class _Entry:
    name: str  # Hugging Face name
    tensor: torch.Tensor  # the parameter or buffer
    lora: torch.nn.Module | None = None  # the peft LoRA layer whose merged weight this is
    gather: list[torch.nn.Parameter] = field(default_factory=list)  # what to gather under ZeRO-3


def _numel(tensor: torch.Tensor) -> int:
    return getattr(tensor, "ds_numel", tensor.numel())


def _hf_name(name: str) -> str | None:
    """The plain model's name of a (possibly peft-wrapped) state-dict key; None for adapter weights."""
    if "lora_" in name:
        return None
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return name.replace(".base_layer.", ".")


def _entries(model: torch.nn.Module) -> list[_Entry]:
    """One entry per key of the plain model's `state_dict()`, tied weights included under each of their names."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    lora_layers = _lora_layers(model)
    entries = []
    for key in model.state_dict():  # names only; under ZeRO-3 the values are empty shards
        name = _hf_name(key)
        if name is None or key not in tensors:
            continue
        tensor = tensors[key]
        layer = lora_layers.get(key.rsplit(".base_layer.", 1)[0]) if ".base_layer." in key else None
        gather = [tensor] if isinstance(tensor, torch.nn.Parameter) else []
        if layer is not None and key.endswith("base_layer.weight"):
            gather += [p for p in layer.parameters() if p is not tensor]
        else:
            layer = None
        entries.append(_Entry(name, tensor, layer, gather))
    return entries


def _lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return {}
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def _gathered(params: list[torch.nn.Parameter]):
    """Gather ZeRO-3 partitioned parameters for reading (a collective: every rank must enter); a no-op otherwise."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


def _value(entry: _Entry) -> torch.Tensor:
    tensor = entry.tensor.detach()
    if entry.lora is None:
        return tensor
    merged = tensor.clone()
    for adapter in entry.lora.active_adapters:
        if adapter in entry.lora.lora_A:
            merged += entry.lora.get_delta_weight(adapter).to(merged.dtype)
    return merged


def iter_named_weights(
    model: torch.nn.Module, bucket_numel: int = DEFAULT_BUCKET_NUMEL
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(name, tensor)` for every key of the plain Hugging Face model's state dict.

    Names are those of `AutoModelForCausalLM.from_pretrained(...).state_dict()` (tied weights appear under each
    name); LoRA models yield the base weights with their adapters merged in, and no adapter tensors. Under
    ZeRO-3 the parameters are gathered a bucket of about `bucket_numel` elements (counted by `ds_numel`) at a
    time: this is a collective, so every rank must iterate to the end, and a yielded tensor is only valid until
    the next one is requested (copy it to keep it).
    """
    bucket: list[_Entry] = []
    size = 0
    for entry in _entries(model):
        bucket.append(entry)
        size += sum(_numel(p) for p in entry.gather) or _numel(entry.tensor)
        if size >= bucket_numel:
            yield from _emit(bucket)
            bucket, size = [], 0
    if bucket:
        yield from _emit(bucket)


def _emit(bucket: list[_Entry]) -> Iterator[tuple[str, torch.Tensor]]:
    params = list({id(p): p for entry in bucket for p in entry.gather}.values())
    with _gathered(params):
        for entry in bucket:
            yield entry.name, _value(entry)


def full_state_dict(
    model: torch.nn.Module, bucket_numel: int = DEFAULT_BUCKET_NUMEL
) -> dict[str, torch.Tensor]:
    """`iter_named_weights` collected into a dict of CPU copies (a collective under ZeRO-3)."""
    return {name: tensor.to("cpu", copy=True) for name, tensor in iter_named_weights(model, bucket_numel)}
