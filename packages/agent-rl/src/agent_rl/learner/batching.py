"""Token-budget micro-batches: which samples go together, on which rank, and their padded tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agent_rl.rollout.samples import TrainingSample

PAD_ID = 0
"""Token id in padded positions; they are masked out of attention and loss, so any valid id does."""


@dataclass
class MicroBatch:
    """Samples padded into one forward pass: each row is `[left pad][prompt][response][right pad]`.

    Prompts are left-padded to P and responses right-padded to R, so every response starts at column P and the
    model only needs logits for the last R + 1 positions (`logits_to_keep`): logits at column P - 1 + j predict
    response token j. The per-token tensors below are (B, R + 1); their last column pairs with the logit of the
    last position, which predicts nothing, and is masked out.
    """

    sample_indices: list[int]
    """Index of each row's sample in the list given to `train_step` (empty for a padding micro-batch)."""
    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    position_ids: torch.Tensor  # (B, P + R), counted from each row's first real token
    targets: torch.Tensor  # (B, R + 1) response token ids, then PAD_ID
    loss_mask: torch.Tensor  # (B, R + 1) float32, 1 on sampled (trained) tokens
    engine_logprobs: torch.Tensor  # (B, R + 1) float32, the engine's logprobs of the sampled tokens
    advantages: torch.Tensor  # (B, 1) float32
    old_logprobs: torch.Tensor | None = None  # (B, R + 1), filled before the first update
    ref_logprobs: torch.Tensor | None = None  # (B, R + 1), filled when β > 0

    @property
    def logits_to_keep(self) -> int:
        return self.targets.shape[1]

    @property
    def num_padded_tokens(self) -> int:
        return self.input_ids.numel()

    def to(self, device: torch.device | str) -> MicroBatch:
        for name in (
            "input_ids",
            "attention_mask",
            "position_ids",
            "targets",
            "loss_mask",
            "engine_logprobs",
            "advantages",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self


def padded_tokens(samples: Sequence[TrainingSample], indices: Sequence[int]) -> int:
    """Tokens of the padded micro-batch of `indices`: rows × (longest prompt + longest response)."""
    if not indices:
        return 0
    prompt = max(len(samples[i].prompt_ids) for i in indices)
    response = max(len(samples[i].response_ids) for i in indices)
    return len(indices) * (prompt + response)


def plan_micro_batches(
    samples: Sequence[TrainingSample], indices: Sequence[int], max_tokens: int
) -> list[list[int]]:
    """Group `indices` into micro-batches of at most `max_tokens` padded tokens (`padded_tokens`).

    Longest samples first, so that samples of similar length share a micro-batch and padding stays small; each
    micro-batch is filled greedily. A sample longer than `max_tokens` gets a micro-batch of its own.
    """
    order = sorted(indices, key=lambda i: (-samples[i].total_length, -len(samples[i].prompt_ids), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and padded_tokens(samples, [*current, index]) > max_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def assign_to_ranks(
    samples: Sequence[TrainingSample], micro_batches: list[list[int]], world_size: int
) -> list[list[list[int]]]:
    """Deal micro-batches out to ranks, balancing padded tokens (longest-processing-time first).

    Deterministic, so that every rank computes the same assignment from the same global batch. Ranks may end up
    with different counts; the learner pads them with empty micro-batches (ZeRO needs every rank to run the
    same number of forward and backward passes).
    """
    loads = [0] * world_size
    per_rank: list[list[list[int]]] = [[] for _ in range(world_size)]
    for batch in sorted(micro_batches, key=lambda b: -padded_tokens(samples, b)):
        rank = min(range(world_size), key=lambda r: (loads[r], len(per_rank[r]), r))
        per_rank[rank].append(batch)
        loads[rank] += padded_tokens(samples, batch)
    return per_rank


def split_mini_batches(num_samples: int, mini_batches: int) -> list[list[int]]:
    """Split sample indices 0..n-1 into `mini_batches` contiguous parts of near-equal size (one optimizer step each)."""
    if not 1 <= mini_batches <= num_samples:
        raise ValueError(
            f"Cannot split {num_samples} samples into {mini_batches} mini-batches: set mini_batches between 1 and "
            "the number of samples per rollout batch."
        )
    bounds = [round(k * num_samples / mini_batches) for k in range(mini_batches + 1)]
    return [list(range(bounds[k], bounds[k + 1])) for k in range(mini_batches)]


def collate(
    samples: Sequence[TrainingSample], indices: Sequence[int], advantages: Sequence[float]
) -> MicroBatch:
    """Pad the samples at `indices` into a `MicroBatch` (see its docstring for the layout)."""
    rows = [samples[i] for i in indices]
    prompt_len = max(len(s.prompt_ids) for s in rows)
    response_len = max(len(s.response_ids) for s in rows)
    width = prompt_len + response_len
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), response_len + 1), PAD_ID, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), response_len + 1), dtype=torch.float32)
    engine_logprobs = torch.zeros((len(rows), response_len + 1), dtype=torch.float32)
    for row, sample in enumerate(rows):
        if not len(sample.response_ids) == len(sample.loss_mask) == len(sample.logprobs):
            raise ValueError(
                f"Sample {sample.episode_id}/{sample.sample_index} has {len(sample.response_ids)} response ids, "
                f"{len(sample.loss_mask)} mask values and {len(sample.logprobs)} logprobs; they must have one per token."
            )
        start, end = prompt_len - len(sample.prompt_ids), prompt_len + len(sample.response_ids)
        input_ids[row, start:end] = torch.tensor(sample.prompt_ids + sample.response_ids, dtype=torch.long)
        attention_mask[row, start:end] = 1
        n = len(sample.response_ids)
        targets[row, :n] = torch.tensor(sample.response_ids, dtype=torch.long)
        loss_mask[row, :n] = torch.tensor(sample.loss_mask, dtype=torch.float32)
        engine_logprobs[row, :n] = torch.tensor(sample.logprobs, dtype=torch.float32)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return MicroBatch(
        sample_indices=list(indices),
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        targets=targets,
        loss_mask=loss_mask,
        engine_logprobs=engine_logprobs,
        advantages=torch.tensor([[advantages[i]] for i in indices], dtype=torch.float32),
    )


def padding_micro_batch() -> MicroBatch:
    """A one-row micro-batch that trains nothing: it keeps a rank's forward/backward count equal to the others'."""
    return MicroBatch(
        sample_indices=[],
        input_ids=torch.full((1, 2), PAD_ID, dtype=torch.long),
        attention_mask=torch.ones((1, 2), dtype=torch.long),
        position_ids=torch.arange(2)[None],
        targets=torch.full((1, 2), PAD_ID, dtype=torch.long),
        loss_mask=torch.zeros((1, 2), dtype=torch.float32),
        engine_logprobs=torch.zeros((1, 2), dtype=torch.float32),
        advantages=torch.zeros((1, 1), dtype=torch.float32),
    )
