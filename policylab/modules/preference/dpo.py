"""DPO and its pairwise variants behind one switch, ``loss_type`` (as in TRL's DPOTrainer).

Rafailov et al., "Direct Preference Optimization" (NeurIPS 2023), and the variants of the
registry :data:`policylab.losses.pairwise.PAIRWISE_LOSSES`. One training step: a single forward
of the policy over the chosen and rejected rows together, the same for the frozen reference
(none for a reference-free loss), the completion log-probs of both, and the selected pairwise
loss averaged over pairs.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from policylab.losses.pairwise import PairStats
from policylab.metrics import IdealizedRankingAccuracy, RankingAccuracy, RewardAccuracy
from policylab.modules.preference.lm import LanguageModelModule, load_causal_lm
from policylab.modules.preference.objective import PairwiseObjective
from policylab.nn.sequence import model_completion_log_probs

#: batch keys that are the rows' tokens, not per-pair fields
_ROW_KEYS = ("input_ids", "attention_mask", "completion_mask")
#: DPO arguments before the loss registry -> (loss_type, key of its loss_kwargs)
_LEGACY_KWARGS = {
    "label_smoothing": ("sigmoid", "label_smoothing"),
    "flip_rate": ("robust", "flip_rate"),
    "rpo_alpha": ("rpo", "alpha"),
    "simpo_gamma": ("simpo", "gamma"),
    "sem_alpha": ("sem_dpo", "alpha"),
}


class DPO(LanguageModelModule):
    """Pairwise preference optimization of a causal LM.

    ``model`` is a name or path for ``AutoModelForCausalLM.from_pretrained`` (or a model
    object); the reference is a frozen copy of it at the start (or ``reference_model``).
    ``loss_type`` is a key of :data:`~policylab.losses.pairwise.PAIRWISE_LOSSES`; ``loss_kwargs``
    sets that entry's hyperparameters (their defaults are the papers': ``label_smoothing`` 0
    for ``sigmoid``, ``flip_rate`` 0.1 for ``robust``, ``alpha`` 1 for ``rpo`` and ``sem_dpo``,
    ``gamma`` 0.5 for ``simpo``, ``epsilon`` 1e-3 for ``exo_pair``); an unknown key stops with
    the allowed ones. ``beta`` (0.1) serves every loss and the reward metrics; SimPO's paper
    uses 2.0 and SPPO's 0.001: set it. ``robust`` reads a per-pair ``flip_rate`` field when the
    batch has one; ``sppo`` reads ``chosen_win_rate`` / ``rejected_win_rate`` when present (hard
    labels otherwise); ``sem_dpo`` needs a ``semantic_distance`` field. A loss's state (BCO's
    reward shift) is part of the module's state dict (``objective.*``).

    The reference model, in one of three forms:

    - a frozen copy of the starting policy (default), or ``reference_model`` (name, path, object);
    - with ``lora`` (``peft.LoraConfig`` arguments) and no ``reference_model``: the policy with
      its adapters disabled, so the base weights are held once;
    - ``precompute_reference``: the reference log-probs of every row are computed once when
      training starts, attached to the rows, and the reference model then leaves the
      accelerator. With ``reference_cache`` (a folder) they are kept on disk, named by a hash of
      the data and of the reference weights, and reused by later runs on the same both.

    ``disable_dropout`` (default, as TRL's DPOTrainer): the policy's dropout is off, so that
    policy and reference log-probs of the same weights agree at the start.
    """

    frozen_parts = ("reference",)

    def __init__(
        self,
        model: Any,
        loss_type: str = "sigmoid",
        beta: float = 0.1,
        loss_kwargs: dict[str, float] | None = None,
        reference_model: Any = None,
        lora: dict[str, Any] | None = None,
        precompute_reference: bool = False,
        reference_cache: str | None = None,
        disable_dropout: bool = True,
        lr: float = 5e-7,
        weight_decay: float = 0.0,
    ) -> None:
        objective = PairwiseObjective(loss_type, loss_kwargs)  # unknown names and keys stop before loading
        if reference_cache is not None and not precompute_reference:
            raise ValueError(
                "reference_cache is where precomputed reference log-probs go: set precompute_reference: true"
            )
        super().__init__(model, lora, disable_dropout)
        self.record_hyperparameters()
        self.objective = objective
        self.needs_reference = objective.needs_reference
        self.reference = None
        if self.needs_reference and (reference_model is not None or lora is None):
            self.reference = (
                load_causal_lm(reference_model) if reference_model is not None else copy.deepcopy(self.policy)
            )
            self.reference.requires_grad_(False).eval()
        self._reference_splits: set[str] = set()  # splits whose rows carry reference log-probs
        # Validation metrics, accumulated over the whole validation set (and across processes).
        self.val_metrics = nn.ModuleDict(
            {
                "reward_accuracy": RewardAccuracy(),
                "reward_margin": MeanMetric(),
                "ranking_accuracy": RankingAccuracy(),
                "ranking_accuracy_per_token": RankingAccuracy(length_normalized=True),
                "idealized_ranking_accuracy": IdealizedRankingAccuracy(beta),
            }
        )

    # ----------------------------------------------------------------- log-probs
    @staticmethod
    def _log_probs(model, batch: dict) -> tuple[Tensor, Tensor]:
        return model_completion_log_probs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])

    @torch.no_grad()
    def reference_log_probs(self, batch: dict) -> Tensor:
        """Summed completion log-probs of every row of ``batch`` under the reference: the
        reference model, or the policy with its LoRA adapters disabled (in eval mode)."""
        if self.reference is not None:
            return self._log_probs(self.reference, batch)[0]
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self._log_probs(self.policy, batch)[0]
        finally:
            self.policy.train(was_training)

    def sequence_stats(self, batch: dict) -> PairStats:
        """Summed completion log-probs of policy and reference, split into chosen and rejected
        halves, with token counts and the batch's extra per-pair fields. Reference log-probs
        attached to the rows (``precompute_reference``) are used as they are; a reference-free
        loss gets zeros (its rewards are then ``beta`` times the policy's log-probs)."""
        logp, tokens = self._log_probs(self.policy, batch)
        pairs = logp.shape[0] // 2
        fields = {k: v for k, v in batch.items() if k not in _ROW_KEYS}
        if not self.needs_reference:
            ref_chosen, ref_rejected = torch.zeros_like(logp[:pairs]), torch.zeros_like(logp[pairs:])
        elif "ref_chosen" in batch:
            ref_chosen, ref_rejected = fields.pop("ref_chosen"), fields.pop("ref_rejected")
        else:
            ref = self.reference_log_probs(batch)
            ref_chosen, ref_rejected = ref[:pairs], ref[pairs:]
        return PairStats(logp[:pairs], logp[pairs:], ref_chosen, ref_rejected, tokens[:pairs], tokens[pairs:], fields)

    # ----------------------------------------------------------------- precomputed reference
    def _reference_fingerprint(self) -> str:
        """A hash of the reference weights (per-tensor sums and sums of squares)."""
        weights = (
            self.reference.state_dict() if self.reference is not None else self.policy.get_base_model().state_dict()
        )
        digest = hashlib.sha256()
        for name, t in weights.items():
            if "lora_" in name:
                continue
            t = t.detach().double()
            digest.update(f"{name}{tuple(t.shape)}{t.sum().item():.10e}{t.square().sum().item():.10e}".encode())
        return digest.hexdigest()[:16]

    def _compute_reference(self, datamodule, split: str) -> dict[str, Tensor]:
        chosen, rejected = [], []
        for batch in tqdm(
            datamodule.ordered_dataloader(split),
            desc=f"reference log-probs ({split})",
            disable=not self.trainer.is_global_zero,
            leave=False,
        ):
            ref = self.reference_log_probs({k: v.to(self.device) for k, v in batch.items()}).float().cpu()
            pairs = ref.shape[0] // 2
            chosen.append(ref[:pairs])
            rejected.append(ref[pairs:])
        return {"ref_chosen": torch.cat(chosen), "ref_rejected": torch.cat(rejected)}

    def attach_reference_log_probs(self, datamodule, splits: list[str]) -> None:
        """Compute (or read from ``reference_cache``) the reference log-probs of the rows of
        ``splits`` of ``datamodule`` and attach them to the rows; then move the reference model
        off the accelerator."""
        cache = Path(self.hparams.reference_cache) if self.hparams.reference_cache else None
        model_hash = self._reference_fingerprint() if cache else ""
        for split in splits:
            path = cache / f"reference_logps_{split}_{datamodule.fingerprint(split)}_{model_hash}.pt" if cache else None
            if path is not None and path.is_file():
                values = torch.load(path, weights_only=True)
                rank_zero_info(f"reference log-probs of {split}: read from {path}")
            else:
                values = self._compute_reference(datamodule, split)
                if path is not None and self.trainer.is_global_zero:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_suffix(".partial")
                    torch.save(values, partial)
                    partial.replace(path)  # never a half-written cache file under the final name
                    rank_zero_info(f"reference log-probs of {split}: written to {path}")
            datamodule.attach_values(split, values)
            self._reference_splits.add(split)
        if self.reference is not None:
            self.reference.to("cpu")

    def _precompute(self, splits: list[str]) -> None:
        if not (self.hparams.precompute_reference and self.needs_reference):
            return
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "attach_values"):
            raise ValueError(
                "precompute_reference needs policylab's PreferenceDataModule (it attaches the values to its rows)"
            )
        missing = [s for s in splits if s in datamodule.splits and s not in self._reference_splits]
        if missing:
            self.attach_reference_log_probs(datamodule, missing)

    def on_fit_start(self) -> None:
        self._precompute(["train", "val"])

    def on_validation_start(self) -> None:
        self._precompute(["val"])

    # ----------------------------------------------------------------- steps
    def batch_size(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // 2  # pairs

    def _loss_and_rewards(self, batch: dict) -> tuple[Tensor, PairStats, Tensor, Tensor]:
        stats = self.sequence_stats(batch)
        loss = self.objective(stats, self.hparams.beta).mean()
        chosen_reward, rejected_reward = (self.hparams.beta * ratio.detach() for ratio in stats.ratios())
        return loss, stats, chosen_reward, rejected_reward

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        loss, _, chosen_reward, rejected_reward = self._loss_and_rewards(batch)
        return loss, {
            "reward_accuracy": (chosen_reward > rejected_reward).float().mean(),
            "reward_margin": (chosen_reward - rejected_reward).mean(),
            "chosen_reward": chosen_reward.mean(),
            "rejected_reward": rejected_reward.mean(),
        }

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Loss and the preference metrics of :mod:`policylab.metrics` over the validation set;
        the idealized ranking accuracy when the rows carry ``preference_probability`` (the
        fraction of raters preferring the chosen response) and there is a reference."""
        loss, stats, chosen_reward, rejected_reward = self._loss_and_rewards(batch)
        m = self.val_metrics
        m["reward_accuracy"].update(chosen_reward, rejected_reward)
        m["reward_margin"].update(chosen_reward - rejected_reward)
        m["ranking_accuracy"].update(stats.chosen, stats.rejected)
        m["ranking_accuracy_per_token"].update(stats.chosen, stats.rejected, stats.chosen_tokens, stats.rejected_tokens)
        names = ["reward_accuracy", "reward_margin", "ranking_accuracy", "ranking_accuracy_per_token"]
        if self.needs_reference and "preference_probability" in stats.fields:
            m["idealized_ranking_accuracy"].update(
                stats.ref_chosen, stats.ref_rejected, stats.fields["preference_probability"]
            )
            names.append("idealized_ranking_accuracy")
        pairs = stats.chosen.shape[0]
        self.log("val/loss", loss, batch_size=pairs, sync_dist=True)
        for name in names:
            self.log(f"val/{name}", m[name], batch_size=pairs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the loss registry kept BCO's shift under
        ``checkpoint["bco_shift"]`` (``mean``, ``count``): it becomes the buffers. Their
        per-variant hyperparameters (``rpo_alpha``, ...) are now ``loss_kwargs``, which
        ``load_from_checkpoint`` does not fill from them: a value that differs from this
        module's is named in a warning."""
        legacy, state = checkpoint.pop("bco_shift", None), checkpoint.get("state_dict", {})
        if legacy is not None and self.objective.state() and "objective.shift" not in state:
            state["objective.shift"] = torch.as_tensor(legacy["mean"], dtype=torch.float32).reshape(())
            state["objective.steps"] = torch.tensor(float(legacy["count"]))
        saved = checkpoint.get("hyper_parameters", {})
        for old, (loss_type, key) in _LEGACY_KWARGS.items():
            value = self.objective.hyperparameters.get(key)
            if old in saved and loss_type == self.hparams.loss_type and saved[old] != value:
                rank_zero_warn(
                    f"the checkpoint was written with {old}={saved[old]} (before loss_kwargs); this module uses "
                    f"{key}={value}: pass loss_kwargs={{'{key}': {saved[old]}}} to keep the checkpoint's value"
                )
