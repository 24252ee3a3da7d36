"""The `Learner`: GRPO updates of a Hugging Face causal LM on DeepSpeed, from `TrainingSample`s."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from agent_rl.embedded_model import resolve_model_path
from agent_rl.grpo import (
    PolicyLoss,
    approx_kl,
    clipped_tokens,
    episode_advantages,
    grpo_loss,
    masked_max,
    masked_min,
    masked_sum,
    token_logprobs,
    token_logprobs_and_entropy,
    token_logprobs_with_entropy,
    truncated_importance_weights,
)
from agent_rl.learner.batching import (
    MicroBatch,
    assign_to_ranks,
    collate,
    padding_micro_batch,
    plan_micro_batches,
    split_mini_batches,
)
from agent_rl.learner.config import LearnerConfig
from agent_rl.learner.engine_setup import (
    build_optimizer,
    deepspeed_config,
    ensure_distributed,
    learner_clips_gradients,
    load_model,
    lr_schedule,
    prepare_model,
    use_bf16,
)
from agent_rl.learner.weights import DEFAULT_BUCKET_NUMEL, full_state_dict, iter_named_weights
from agent_rl.rollout.samples import TrainingSample

logger = logging.getLogger("agent_rl")

_SUMS = ("loss", "tokens", "ratio", "clip_low", "clip_high", "approx_kl", "kl", "tis_weight", "tis_dropped", "entropy")
_DS_DIR, _DS_TAG, _STATE_FILE = "deepspeed", "state", "learner_state.json"


class Learner:
    """GRPO on DeepSpeed: `train_step(samples)` turns one rollout batch into `mini_batches × num_iterations` updates.

    One step, top to bottom (`train_step`): advantages per episode within its group → micro-batches of at most
    `max_tokens_per_micro_batch` tokens, dealt out to the ranks → old logprobs (and the reference's, when β > 0)
    in one no-grad pass (skipped when the batch gets a single update: its own forward pass is π_old) → for each
    iteration and mini-batch: forward, clipped loss normalised by the mini-batch's global trained-token count,
    backward; one optimizer step per mini-batch → metrics reduced over ranks.

    Distributed contract: every rank calls every method with the same arguments (`train_step` gets the whole
    global batch on every rank and trains its share); ZeRO-3 gathers are collectives. In a plain `python`
    process the learner is a group of one; under `torchrun`/`deepspeed` it joins theirs.
    """

    def __init__(
        self, model: str | os.PathLike | torch.nn.Module, config: LearnerConfig | None = None
    ) -> None:
        """Load `model` (a Hugging Face directory or hub id, `embedded:<name>`, or a `PreTrainedModel`) and wrap it.

        Building the engine joins the process group (`ensure_distributed`). The first DeepSpeed start on a CPU
        machine compiles a small communication op (30-40 s on 2 cores), cached under TORCH_EXTENSIONS_DIR.
        """
        import deepspeed

        self.config = config = config or LearnerConfig()
        ensure_distributed()
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.model_path = resolve_model_path(str(model)) if isinstance(model, str | os.PathLike) else None
        self._ds_config = deepspeed_config(config, self.world_size)
        self._clips_gradients = learner_clips_gradients(config)
        module = load_model(self.model_path, config, self._ds_config) if self.model_path is not None else model
        reference = self._reference_model(module) if config.beta != 0.0 and config.lora is None else None
        module = prepare_model(module, config)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module,
            optimizer=build_optimizer(module, config),
            lr_scheduler=lr_schedule(config),
            config=self._ds_config,
        )
        if self.world_size == 1 and config.zero_stage == 0:
            # one rank without ZeRO has nothing to reduce: skip flattening every gradient into a buffer for it
            self.engine.enable_backward_allreduce = False
        self.device = self.engine.device
        self.reference = reference.to(self.device) if reference is not None else None
        self.step = 0  # optimizer steps taken

    # ------------------------------------------------------------------ the training step

    def train_step(self, samples: Sequence[TrainingSample]) -> dict[str, float]:
        """Train on one rollout batch (the same global batch on every rank) and return its metrics.

        Metrics (means over the updates and trained tokens of this call, reduced over ranks):
        `learner/loss`, `learner/grad_norm` (before clipping), `learner/lr` (of the last update), `learner/clip_fraction/low`
        and `/high` (tokens whose gradient the clip removed), `learner/approx_kl` (k3 of KL(π_old‖π_θ)),
        `learner/entropy` (of π_old, temperature-scaled), `learner/ratio/mean`, `/min`, `/max`, `learner/kl` (to
        the reference, β > 0), `learner/tis/weight_mean` and `/dropped_fraction` (TIS on), `learner/advantage/mean`
        and `/abs_mean`, `learner/zero_variance_fraction`, `learner/updates`, `learner/trained_tokens`,
        `learner/padding_fraction`, `learner/tokens_per_s` (sequence tokens through forward+backward per second of
        updating, all ranks), `timing/learner/{score,update,step}_s`, and `timing/learner/thread_cpu_s` (CPU time of
        the calling thread; on a GPU well under `step_s` only when the thread waited for the GIL, e.g. on a
        collection running beside it, since CUDA's spin-waits count as CPU time).
        """
        cfg = self.config
        start, cpu_start = time.perf_counter(), time.thread_time()
        self._check_same_batch_on_every_rank(samples)
        # ALGO LOGIC: advantages per episode within its group, broadcast to the episode's samples
        advantages, zero_variance = episode_advantages(samples, cfg.advantage_scaling, cfg.advantage_eps)
        plan = [
            self._local_micro_batches(samples, indices, advantages)
            for indices in split_mini_batches(len(samples), cfg.mini_batches)
        ]
        # the policy that sampled (π_old), scored once before the first update; the reference when β > 0. With a
        # single update per batch π_old is the update's own forward pass (detached): no extra pass, ratio exactly 1
        single_update = cfg.num_iterations * len(plan) == 1
        entropy_sum = self._score(plan, old_logprobs=not single_update)
        scored = time.perf_counter()
        sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=self.device)
        # max ratio, -min ratio
        extremes = torch.tensor([-torch.inf, -torch.inf], dtype=torch.float64, device=self.device)
        grad_norms, lrs = [], []
        for _ in range(cfg.num_iterations):
            for micro_batches in plan:
                lrs.append(self.scheduler.get_last_lr()[0])
                grad_norms.append(self._update(micro_batches, sums, extremes))
        updated = time.perf_counter()
        # TRY NOT TO MODIFY: reduce the metrics over ranks (one all-reduce each)
        dist.all_reduce(sums)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        totals = dict(zip(_SUMS, sums.tolist(), strict=True))
        updates = cfg.num_iterations * len(plan)
        token_updates = max(totals["tokens"], 1.0)
        trained_tokens = sum(s.num_trained_tokens for s in samples)
        sequence_tokens = sum(s.total_length for s in samples)
        padded = sum(m.num_padded_tokens for mini in plan for m in mini if m.sample_indices)
        padded = self._all_reduce_scalar(float(padded))
        metrics = {
            "learner/loss": totals["loss"] / updates,
            "learner/grad_norm": sum(grad_norms) / updates,
            "learner/lr": lrs[-1],
            "learner/clip_fraction/low": totals["clip_low"] / token_updates,
            "learner/clip_fraction/high": totals["clip_high"] / token_updates,
            "learner/approx_kl": totals["approx_kl"] / token_updates,
            "learner/entropy": (entropy_sum + totals["entropy"]) / max(trained_tokens, 1),
            "learner/ratio/mean": totals["ratio"] / token_updates,
            "learner/ratio/max": extremes[0].item(),
            "learner/ratio/min": -extremes[1].item(),
            "learner/advantage/mean": sum(advantages) / len(advantages),
            "learner/advantage/abs_mean": sum(abs(a) for a in advantages) / len(advantages),
            "learner/zero_variance_fraction": len(zero_variance) / len({s.group_id for s in samples}),
            "learner/updates": float(updates),
            "learner/trained_tokens": float(trained_tokens),
            "learner/padding_fraction": 1.0 - sequence_tokens / max(padded, 1.0),
            "learner/tokens_per_s": sequence_tokens * cfg.num_iterations / max(updated - scored, 1e-9),
            "timing/learner/score_s": scored - start,
            "timing/learner/update_s": updated - scored,
            "timing/learner/step_s": time.perf_counter() - start,
            "timing/learner/thread_cpu_s": time.thread_time() - cpu_start,
        }
        if cfg.beta != 0.0:
            metrics["learner/kl"] = totals["kl"] / token_updates
        if cfg.tis_cap is not None:
            metrics["learner/tis/weight_mean"] = totals["tis_weight"] / token_updates
            metrics["learner/tis/dropped_fraction"] = totals["tis_dropped"] / token_updates
        return metrics

    def supervised_step(self, samples: Sequence[TrainingSample], lr: float | None = None) -> dict[str, float]:
        """One optimizer step of supervised fine-tuning on `samples` (e.g. demonstrations for a cold start).

        The loss is the negative log-likelihood of every trained token (loss mask 1: the turns the policy wrote;
        never the tool outputs or template tokens the env inserted), averaged over the step's trained tokens,
        under the untempered policy. Rewards, advantages and logprobs of the samples are not used. `lr` (default:
        the scheduled one) applies to this step only; the learning-rate schedule of the GRPO steps does not
        advance. Metrics: `sft/loss`, `sft/grad_norm` (before clipping), `sft/trained_tokens`, `timing/sft/step_s`.
        """
        start = time.perf_counter()
        self._check_same_batch_on_every_rank(samples)
        micro_batches = self._local_micro_batches(samples, list(range(len(samples))), [0.0] * len(samples))
        num_tokens = max(self._all_reduce_scalar(sum(float(m.loss_mask.sum()) for m in micro_batches)), 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for k, micro in enumerate(micro_batches):
            self.engine.set_gradient_accumulation_boundary(k == len(micro_batches) - 1)
            logps = token_logprobs(self._logits(self.engine, micro), micro.targets, 1.0)  # (B, R+1)
            loss = -(logps * micro.loss_mask).sum() / num_tokens
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            loss_sum += loss.detach().to(torch.float64)
        grad_norm = self._clip_gradients()
        schedule = self.scheduler.state_dict()
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.engine.step()
        self.scheduler.load_state_dict(schedule)  # the GRPO schedule has not moved
        for group, scheduled in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = scheduled
        dist.all_reduce(loss_sum)
        return {
            "sft/loss": float(loss_sum),
            "sft/grad_norm": grad_norm if grad_norm is not None else float(self.engine.get_global_grad_norm()),
            "sft/trained_tokens": float(sum(s.num_trained_tokens for s in samples)),
            "timing/sft/step_s": time.perf_counter() - start,
        }

    def reset_optimizer_state(self) -> None:
        """Forget AdamW's moments (and step counts), e.g. after a cold start: otherwise the supervised steps'
        momentum keeps moving the weights through the first GRPO steps, even where every advantage is 0."""
        optimizer = self.optimizer
        while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
            optimizer = optimizer.optimizer  # DeepSpeed's wrappers hold the client AdamW
        optimizer.state.clear()

    def _update(self, micro_batches: list[MicroBatch], sums: torch.Tensor, extremes: torch.Tensor) -> float:
        """One optimizer step on one mini-batch (this rank's micro-batches); returns the gradient norm."""
        cfg = self.config
        num_tokens = self._all_reduce_scalar(sum(float(m.loss_mask.sum()) for m in micro_batches))
        num_sequences = self._all_reduce_scalar(float(sum(len(m.sample_indices) for m in micro_batches)))
        for k, micro in enumerate(micro_batches):
            self.engine.set_gradient_accumulation_boundary(k == len(micro_batches) - 1)
            # ALGO LOGIC: the clipped surrogate on this micro-batch, normalised by the mini-batch's global counts
            logits = self._logits(self.engine, micro)  # (B, R+1, V)
            entropy = None
            if micro.old_logprobs is None:  # the single update of this batch: π_old is this forward pass
                logps, token_entropy = token_logprobs_with_entropy(logits, micro.targets, cfg.temperature)  # (B, R+1) each
                micro.old_logprobs = logps.detach()
                entropy = masked_sum(token_entropy, micro.loss_mask)
            else:
                logps = token_logprobs(logits, micro.targets, cfg.temperature)  # (B, R+1)
            del logits  # the graph keeps what backward needs; don't hold it into the next forward
            weights = None
            if cfg.tis_cap is not None:
                weights = truncated_importance_weights(
                    micro.old_logprobs, micro.engine_logprobs, cfg.tis_cap, cfg.tis_mode, micro.loss_mask
                )
            out = grpo_loss(
                logps,
                micro.old_logprobs,
                micro.advantages,
                micro.loss_mask,
                epsilon_low=cfg.epsilon_low,
                epsilon_high=cfg.epsilon_high,
                aggregation=cfg.loss_aggregation,
                num_tokens=num_tokens,
                num_sequences=num_sequences,
                max_length=cfg.max_response_length,
                importance_weights=weights,
                ref_per_token_logps=micro.ref_logprobs,
                beta=cfg.beta,
            )
            # DeepSpeed averages gradients over ranks; the loss is already a share of the global sum, so undo that
            self.engine.backward(out.loss * self.world_size, scale_wrt_gas=False)
            self._accumulate(sums, extremes, micro, logps, out, weights, entropy)
        grad_norm = self._clip_gradients()
        self.engine.step()
        self.step += 1
        return grad_norm if grad_norm is not None else float(self.engine.get_global_grad_norm())

    def _accumulate(
        self,
        sums: torch.Tensor,
        extremes: torch.Tensor,
        micro: MicroBatch,
        logps: torch.Tensor,
        out: PolicyLoss,
        weights: torch.Tensor | None,
        entropy: torch.Tensor | None = None,
    ) -> None:
        """Add this micro-batch's metric sums (in `_SUMS` order) and ratio extremes, on device, without syncing.
        `entropy`: the summed entropy of π_old over the trained tokens, when this update pass was its scoring."""
        cfg, mask = self.config, micro.loss_mask
        low, high = clipped_tokens(out.ratio, micro.advantages, cfg.epsilon_low, cfg.epsilon_high)
        zero = torch.zeros((), device=mask.device)
        values = {
            "loss": out.loss.detach(),
            "tokens": mask.sum(),
            "ratio": masked_sum(out.ratio, mask),
            "clip_low": masked_sum(low, mask),
            "clip_high": masked_sum(high, mask),
            "approx_kl": masked_sum(approx_kl(logps, micro.old_logprobs), mask),
            "kl": masked_sum(out.per_token_kl, mask) if out.per_token_kl is not None else zero,
            "tis_weight": masked_sum(weights, mask) if weights is not None else zero,
            "tis_dropped": masked_sum(weights == 0, mask) if weights is not None else zero,
            "entropy": entropy if entropy is not None else zero,
        }
        sums += torch.stack([values[name].to(torch.float64) for name in _SUMS])
        if mask.any():
            extremes[0] = torch.maximum(extremes[0], masked_max(out.ratio, mask).double())
            extremes[1] = torch.maximum(extremes[1], -masked_min(out.ratio, mask).double())

    @torch.no_grad()
    def _score(self, plan: list[list[MicroBatch]], old_logprobs: bool = True) -> float:
        """Fill each micro-batch's old logprobs (unless `old_logprobs` is False: then the update fills them) and,
        when β > 0, the reference's; return the summed entropy of π_old over trained tokens that it scored."""
        entropy = 0.0
        for micro in (m for mini in plan for m in mini):
            if not old_logprobs:
                if self.config.beta != 0.0:
                    micro.ref_logprobs = self._reference_logprobs(micro)
                continue
            logits = self._logits(self.engine, micro)
            micro.old_logprobs, per_token_entropy = token_logprobs_and_entropy(
                logits, micro.targets, self.config.temperature
            )
            entropy += float(masked_sum(per_token_entropy, micro.loss_mask))
            del logits
            if self.config.beta != 0.0:
                micro.ref_logprobs = self._reference_logprobs(micro)
        return self._all_reduce_scalar(entropy)

    def _logits(self, model, micro: MicroBatch) -> torch.Tensor:
        """Logits (B, R + 1, V) of the positions that predict the response tokens (see `MicroBatch`)."""
        output = model(
            input_ids=micro.input_ids,
            attention_mask=micro.attention_mask,
            position_ids=micro.position_ids,
            logits_to_keep=micro.logits_to_keep,
            use_cache=False,
        )
        return output.logits

    def _reference_logprobs(self, micro: MicroBatch) -> torch.Tensor:
        if self.reference is not None:
            return token_logprobs(self._logits(self.reference, micro), micro.targets, self.config.temperature)
        with self.engine.module.disable_adapter():  # LoRA: the reference is the base model
            return token_logprobs(self._logits(self.engine, micro), micro.targets, self.config.temperature)

    def _reference_model(self, module: torch.nn.Module) -> torch.nn.Module:
        """A frozen copy of the initial weights for the KL term (bf16 when training in bf16)."""
        if self.config.zero_stage == 3:
            raise ValueError(
                "beta > 0 with ZeRO-3 is not supported (the reference would not be partitioned): use zero_stage ≤ 2, LoRA, or beta = 0."
            )
        import copy

        reference = copy.deepcopy(module)
        reference.requires_grad_(False).eval()
        return reference.to(torch.bfloat16) if use_bf16(self.config) else reference

    def _local_micro_batches(
        self, samples: Sequence[TrainingSample], indices: list[int], advantages: list[float]
    ) -> list[MicroBatch]:
        """This rank's micro-batches of one mini-batch, padded with empty ones to the count of the busiest rank."""
        micro = plan_micro_batches(samples, indices, self.config.max_tokens_per_micro_batch)
        per_rank = assign_to_ranks(samples, micro, self.world_size)
        count = max(len(batches) for batches in per_rank)
        mine = [collate(samples, batch, advantages).to(self.device) for batch in per_rank[self.rank]]
        return mine + [padding_micro_batch().to(self.device) for _ in range(count - len(mine))]

    # ------------------------------------------------------------------ scoring, weights, checkpoints

    @torch.no_grad()
    def compute_logprobs(self, samples: Sequence[TrainingSample]) -> list[list[float]]:
        """The current policy's temperature-scaled logprob of every response token of each sample (a collective:
        every rank scores every sample). Compare with `sample.logprobs` to measure the engine/learner mismatch."""
        result: list[list[float]] = [[] for _ in samples]
        zeros = [0.0] * len(samples)
        for indices in plan_micro_batches(
            samples, range(len(samples)), self.config.max_tokens_per_micro_batch
        ):
            micro = collate(samples, indices, zeros).to(self.device)
            logps = token_logprobs(
                self._logits(self.engine, micro), micro.targets, self.config.temperature
            ).cpu()
            for row, index in enumerate(indices):
                result[index] = logps[row, : len(samples[index].response_ids)].tolist()
        return result

    def named_weights(self, bucket_numel: int = DEFAULT_BUCKET_NUMEL) -> Iterator[tuple[str, torch.Tensor]]:
        """`(name, tensor)` for every weight under its Hugging Face name, for weight sync to an inference engine.

        LoRA adapters come merged into their base weights. Under ZeRO-3 the parameters are gathered about
        `bucket_numel` elements at a time (by `ds_numel`): every rank must iterate to the end, and each tensor
        is valid only until the next is requested (see `agent_rl.learner.weights.iter_named_weights`).
        """
        return iter_named_weights(self.engine.module, bucket_numel)

    def state_dict_for_sync(self, bucket_numel: int = DEFAULT_BUCKET_NUMEL) -> dict[str, torch.Tensor]:
        """`named_weights` as a dict of CPU copies: the plain model's full state dict (a collective under ZeRO-3)."""
        return full_state_dict(self.engine.module, bucket_numel)

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Save a Hugging Face model directory that also resumes training, atomically (a collective).

        `directory` gets `config.json` + safetensors (LoRA merged in) and the tokenizer of the model path, so
        engines load it as is; `deepspeed/` (weights, optimizer and scheduler state of every rank) and
        `learner_state.json` let `load_checkpoint` resume. Written to a temporary sibling and renamed into
        place, so a crash never leaves a half-written `directory`; an existing one is replaced.
        """
        final = Path(directory).resolve()
        holder = [None]
        if self.rank == 0:
            final.parent.mkdir(parents=True, exist_ok=True)
            holder[0] = tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent)
        dist.broadcast_object_list(holder, src=0)
        tmp = Path(holder[0])
        self.engine.save_checkpoint(
            str(tmp / _DS_DIR), tag=_DS_TAG, client_state={"learner_step": self.step}, save_latest=False
        )
        state_dict = self.state_dict_for_sync()  # collective: every rank gathers, rank 0 writes
        if self.rank == 0:
            self._save_pretrained(tmp, state_dict)
            (tmp / _STATE_FILE).write_text(
                json.dumps(
                    {
                        "step": self.step,
                        "world_size": self.world_size,
                        "config": self.config.model_dump(mode="json"),
                    },
                    indent=1,
                )
            )
            tmp.chmod(0o755)
            if final.exists():
                stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                final.rename(stale / final.name)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(final)
        dist.barrier()
        return final

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save the current weights (LoRA merged in) and the model path's tokenizer as a Hugging Face model
        directory, without optimizer state: what engines, `transformers` and other trainers load (a collective)."""
        out = Path(directory).resolve()
        state_dict = self.state_dict_for_sync()  # collective: every rank gathers, rank 0 writes
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            self._save_pretrained(out, state_dict)
        dist.barrier()
        return out

    def load_checkpoint(self, directory: str | Path) -> None:
        """Resume from `save_checkpoint(directory)`: weights, optimizer and LR-scheduler state, and the step count."""
        path = Path(directory)
        if not (path / _DS_DIR / _DS_TAG).is_dir():
            raise FileNotFoundError(
                f"{path} holds no learner checkpoint ({_DS_DIR}/{_DS_TAG} is missing); pass a directory written by Learner.save_checkpoint."
            )
        _, client_state = self.engine.load_checkpoint(
            str(path / _DS_DIR), tag=_DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        self.step = int((client_state or {}).get("learner_step", 0))

    def _save_pretrained(self, out: Path, state_dict: dict[str, torch.Tensor]) -> None:
        module = self.engine.module
        base = module.get_base_model() if hasattr(module, "get_base_model") else module
        tied = {n for n, _ in base.named_parameters(remove_duplicate=False)} - {
            n for n, _ in base.named_parameters()
        }
        base.save_pretrained(out, state_dict={n: t for n, t in state_dict.items() if n not in tied})
        if self.model_path is None:
            return
        try:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(out)
        except (OSError, ValueError) as error:
            logger.warning(
                "The checkpoint %s has no tokenizer: none loads from %s (%s).", out, self.model_path, error
            )

    # ------------------------------------------------------------------ plumbing

    def _clip_gradients(self) -> float | None:
        """Clip the gradients to `grad_clip` and return their norm before clipping, where the learner clips
        (`learner_clips_gradients`: no ZeRO, no DeepSpeed bf16 mode; the gradients are already averaged over the
        ranks here). None elsewhere: DeepSpeed's optimizer wrapper clips and records the norm
        (`get_global_grad_norm()` after the step)."""
        if not self._clips_gradients:
            return None
        params = [p for p in self.engine.module.parameters() if p.grad is not None]
        if not params:
            return 0.0
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.config.grad_clip, norm, foreach=True)
        return float(norm)

    def _all_reduce_scalar(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def _check_same_batch_on_every_rank(self, samples: Sequence[TrainingSample]) -> None:
        if not samples:
            raise ValueError("train_step got no samples: collect at least one episode with a trained token.")
        if self.world_size == 1:
            return
        fingerprint = torch.tensor(
            [
                len(samples),
                sum(s.total_length for s in samples),
                sum(s.num_trained_tokens for s in samples),
                sum(s.reward for s in samples),
            ],
            dtype=torch.float64,
            device=self.device,
        )
        both = torch.cat([fingerprint, -fingerprint])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        if not torch.equal(both[:4], -both[4:]):
            raise ValueError(
                "train_step needs the same global batch on every rank (each rank trains its share of it); the ranks passed different samples."
            )

    @property
    def module(self) -> torch.nn.Module:
        """The trained model (a peft model with LoRA), without DeepSpeed's wrapper; ZeRO-3 parameters are shards."""
        return self.engine.module
