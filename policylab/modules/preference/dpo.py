"""DPO and its pairwise variants behind one switch, ``loss_type`` (as in TRL's DPOTrainer).

Rafailov et al., "Direct Preference Optimization" (NeurIPS 2023), and the variants in
:mod:`policylab.losses.preference`. One training step: a single forward of the policy over the
chosen and rejected rows together, the same for the frozen reference (none for SimPO), the
completion log-probs of both, and the selected pairwise loss averaged over pairs.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from policylab.losses import preference as P
from policylab.metrics import IdealizedRankingAccuracy, RankingAccuracy, RewardAccuracy
from policylab.modules.preference.lm import LanguageModelModule, load_causal_lm
from policylab.nn.sequence import model_completion_log_probs


def _ratios(s: dict) -> tuple[Tensor, Tensor]:
    return s["chosen"] - s["ref_chosen"], s["rejected"] - s["ref_rejected"]


def _mean_ratios(s: dict) -> tuple[Tensor, Tensor]:
    return (s["chosen"] - s["ref_chosen"]) / s["chosen_tokens"], (s["rejected"] - s["ref_rejected"]) / s[
        "rejected_tokens"
    ]


#: loss_type -> per-pair loss of the summed log-probs ``s`` (policy and reference, chosen and
#: rejected, token counts, extra batch fields) and the module (for hyperparameters and state).
LOSS_TYPES: dict[str, Callable[[dict, Any], Tensor]] = {
    "sigmoid": lambda s, m: P.dpo_loss(*_ratios(s), m.hparams.beta, m.hparams.label_smoothing),
    "robust": lambda s, m: P.robust_dpo_loss(*_ratios(s), m.hparams.beta, s.get("flip_rate", m.hparams.flip_rate)),
    "ipo": lambda s, m: P.ipo_loss(*_mean_ratios(s), m.hparams.beta),
    "hinge": lambda s, m: P.hinge_loss(*_ratios(s), m.hparams.beta),
    "nca_pair": lambda s, m: P.nca_loss(*_ratios(s), m.hparams.beta),
    "bco_pair": lambda s, m: m._bco_loss(*_ratios(s)),
    "sppo": lambda s, m: P.sppo_loss(
        *_ratios(s), m.hparams.beta, s.get("chosen_win_rate", 1.0), s.get("rejected_win_rate", 0.0)
    ),
    "rpo": lambda s, m: P.rpo_loss(*_ratios(s), -s["chosen"] / s["chosen_tokens"], m.hparams.beta, m.hparams.rpo_alpha),
    "simpo": lambda s, m: P.simpo_loss(
        s["chosen"] / s["chosen_tokens"], s["rejected"] / s["rejected_tokens"], m.hparams.beta, m.hparams.simpo_gamma
    ),
    "sem_dpo": lambda s, m: P.sem_dpo_loss(*_ratios(s), s["semantic_distance"], m.hparams.beta, m.hparams.sem_alpha),
}
REFERENCE_FREE = {"simpo"}


class DPO(LanguageModelModule):
    """Pairwise preference optimization of a causal LM.

    ``model`` is a name or path for ``AutoModelForCausalLM.from_pretrained`` (or a model
    object); the reference is a frozen copy of it at the start (or ``reference_model``).
    ``loss_type`` is one of :data:`LOSS_TYPES`; the per-type hyperparameters default to the
    papers' values (beta 0.1; SimPO beta 2.0 and gamma 0.5; SPPO beta 0.001 is not forced,
    set it). ``robust`` reads a per-pair ``flip_rate`` field when the batch has one, else
    ``flip_rate``; ``sppo`` reads ``chosen_win_rate`` / ``rejected_win_rate`` when present
    (hard labels otherwise); ``sem_dpo`` needs a ``semantic_distance`` field.

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

    def __init__(
        self,
        model: Any,
        loss_type: str = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        flip_rate: float = 0.1,
        rpo_alpha: float = 1.0,
        simpo_gamma: float = 0.5,
        sem_alpha: float = 1.0,
        reference_model: Any = None,
        lora: dict[str, Any] | None = None,
        precompute_reference: bool = False,
        reference_cache: str | None = None,
        disable_dropout: bool = True,
        lr: float = 5e-7,
        weight_decay: float = 0.0,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(sorted(LOSS_TYPES))}")
        if reference_cache is not None and not precompute_reference:
            raise ValueError(
                "reference_cache is where precomputed reference log-probs go: set precompute_reference: true"
            )
        super().__init__(model, lora, disable_dropout)
        self.save_hyperparameters(ignore=[] if isinstance(model, str) else ["model", "reference_model"])
        self.needs_reference = loss_type not in REFERENCE_FREE
        self.reference = None
        if self.needs_reference and (reference_model is not None or lora is None):
            self.reference = (
                load_causal_lm(reference_model) if reference_model is not None else copy.deepcopy(self.policy)
            )
            self.reference.requires_grad_(False).eval()
        self._reference_splits: set[str] = set()  # splits whose rows carry reference log-probs
        self._bco_shift = P.RunningMean()
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

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # never dropout in the reference
        return self

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

    def sequence_stats(self, batch: dict) -> dict[str, Tensor]:
        """Summed completion log-probs of policy and reference, split into chosen and rejected
        halves, with token counts and the batch's extra per-pair fields. Reference log-probs
        attached to the rows (``precompute_reference``) are used as they are."""
        logp, tokens = self._log_probs(self.policy, batch)
        pairs = logp.shape[0] // 2
        stats = {
            "chosen": logp[:pairs],
            "rejected": logp[pairs:],
            "chosen_tokens": tokens[:pairs],
            "rejected_tokens": tokens[pairs:],
        }
        if not self.needs_reference:
            stats.update(ref_chosen=torch.zeros_like(stats["chosen"]), ref_rejected=torch.zeros_like(stats["rejected"]))
        elif "ref_chosen" not in batch:
            ref = self.reference_log_probs(batch)
            stats.update(ref_chosen=ref[:pairs], ref_rejected=ref[pairs:])
        stats.update({k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "completion_mask")})
        return stats

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

    def _bco_loss(self, chosen_ratio: Tensor, rejected_ratio: Tensor) -> Tensor:
        beta = self.hparams.beta
        rewards = torch.cat([beta * chosen_ratio, beta * rejected_ratio])
        delta = self._bco_shift.update(rewards) if self.training else self._bco_shift.mean.to(rewards.device)
        return P.bco_pair_loss(chosen_ratio, rejected_ratio, beta, delta)

    # ----------------------------------------------------------------- steps
    def _loss_and_rewards(self, batch: dict) -> tuple[Tensor, dict, Tensor, Tensor]:
        stats = self.sequence_stats(batch)
        loss = LOSS_TYPES[self.hparams.loss_type](stats, self).mean()
        chosen_reward, rejected_reward = (self.hparams.beta * ratio.detach() for ratio in _ratios(stats))
        return loss, stats, chosen_reward, rejected_reward

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, stats, chosen_reward, rejected_reward = self._loss_and_rewards(batch)
        if (self.global_step + 1) % self.trainer.log_every_n_steps:
            return loss  # metrics only on the steps Lightning writes
        self.log_dict(
            {
                "train/loss": loss,
                "train/reward_accuracy": (chosen_reward > rejected_reward).float().mean(),
                "train/reward_margin": (chosen_reward - rejected_reward).mean(),
                "train/chosen_reward": chosen_reward.mean(),
                "train/rejected_reward": rejected_reward.mean(),
            },
            batch_size=stats["chosen"].shape[0],
            prog_bar=True,
        )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Loss and the preference metrics of :mod:`policylab.metrics` over the validation set;
        the idealized ranking accuracy when the rows carry ``preference_probability`` (the
        fraction of raters preferring the chosen response) and there is a reference."""
        loss, stats, chosen_reward, rejected_reward = self._loss_and_rewards(batch)
        m = self.val_metrics
        m["reward_accuracy"].update(chosen_reward, rejected_reward)
        m["reward_margin"].update(chosen_reward - rejected_reward)
        m["ranking_accuracy"].update(stats["chosen"], stats["rejected"])
        m["ranking_accuracy_per_token"].update(
            stats["chosen"], stats["rejected"], stats["chosen_tokens"], stats["rejected_tokens"]
        )
        names = ["reward_accuracy", "reward_margin", "ranking_accuracy", "ranking_accuracy_per_token"]
        if self.needs_reference and "preference_probability" in stats:
            m["idealized_ranking_accuracy"].update(
                stats["ref_chosen"], stats["ref_rejected"], stats["preference_probability"]
            )
            names.append("idealized_ranking_accuracy")
        pairs = stats["chosen"].shape[0]
        self.log("val/loss", loss, batch_size=pairs, sync_dist=True)
        for name in names:
            self.log(f"val/{name}", m[name], batch_size=pairs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["bco_shift"] = self._bco_shift.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "bco_shift" in checkpoint:
            self._bco_shift.load_state_dict(checkpoint["bco_shift"])
