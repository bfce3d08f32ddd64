"""VPO: Value-Incentivized Preference Optimization (Cen et al., ICLR 2025, arXiv 2405.19320), online.

VPO regularizes the Bradley-Terry likelihood of the implicit reward with the value of its optimal
policy, with the sign of optimism online (pessimism offline). With the implicit reward of DPO and
the value measured against a calibration policy ``pi_cal`` (the paper's reward calibration), the
objective over the policy is (derivation in :mod:`policylab.losses.vpo`)

    L(theta) = L_DPO(theta; pairs) + sign * alpha * beta * E_{x, y ~ pi_cal}[ log pi_theta(y|x) / pi_ref(y|x) ].

Here :class:`VPO` is :class:`~policylab.modules.preference.OnlineDPO` (OAIF's loop: two samples per
prompt from the current policy, labelled by the judge, a DPO step on the pair) with that value term
added at every step. Choices, documented:

- ``value_sign: optimistic`` (online, ``+``: the step lowers ``log pi_theta`` of the calibration
  samples, moving mass away from where ``pi_cal`` already is: exploration); ``pessimistic`` (the
  offline sign, ``-``: the step raises it);
- ``calibration: reference`` (default): ``pi_cal = pi_ref``, one fresh sample per pair's prompt from
  the reference at temperature 1 (exactly ``pi_ref``), drawn at every step with a seed of the step
  and rank: no judge call, nothing to store, the same samples after a resume. ``chosen``: the
  pairs' chosen responses as the calibration samples (the empirical distribution of preferred
  responses; with the pessimistic sign this is DPO plus a likelihood term on the chosen, as RPO);
- the value term is a mean over calibration samples and the DPO term a mean over pairs, so
  ``alpha`` weighs one sample's log-ratio against one pair's loss. The paper's online algorithm
  refits on all data gathered so far; here each step trains on the fresh pairs (OAIF's loop).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from policylab.datamodules.online import right_padded
from policylab.losses.vpo import VALUE_SIGNS, value_regularizer, vpo_loss
from policylab.modules.preference.online_dpo import OnlineDPO

#: which samples stand for pi_cal in the value term
CALIBRATIONS = ("reference", "chosen")


class VPO(OnlineDPO):
    """Online VPO: online DPO plus the value term (see the module docstring).

    Args:
        model: the SFT model (name, path or model); policy and fixed reference start there.
        judge: a :class:`~policylab.judges.ScalarJudge` or a check's dotted path (labels the pairs).
        alpha: the weight of the value term (not verified in the paper's text; see the config for a
            measured value on the addition task).
        value_sign: ``optimistic`` (online, the paper's choice for online RLHF) or ``pessimistic``.
        calibration: ``reference`` (``y ~ pi_ref``, one per pair's prompt, every step) or ``chosen``.
        kwargs: the loop, sampling and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO` (``beta``, ``num_generations``, ...).
    """

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        alpha: float = 0.01,
        value_sign: str = "optimistic",
        calibration: str = "reference",
        **kwargs: Any,
    ) -> None:
        if value_sign not in VALUE_SIGNS:
            raise ValueError(f"value_sign must be one of {', '.join(VALUE_SIGNS)}, got {value_sign!r}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha (the weight of the value term) must be >= 0, got {alpha}")
        super().__init__(model, judge=judge, loss_type="sigmoid", **kwargs)
        self.calibration_sampler = None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.calibration_sampler is None:
            # y ~ pi_ref exactly: the sampler's settings at temperature 1, untruncated
            self.calibration_sampler = copy.copy(self.sampler)
            s = self.calibration_sampler
            s.temperature, s.top_k, s.top_p = 1.0, 0, 1.0

    def calibration_rows(self, batch: dict) -> dict[str, Tensor]:
        """One sample of ``pi_ref`` per pair's prompt (``input_ids``, ``attention_mask``,
        ``completion_mask``, right-padded), seeded by the global step and the rank."""
        data = self.online_data()
        prompts = [data.prompts[i] for i in batch["prompt_index"].tolist()]
        seed = (data.generation_seed(self.global_step, self.trainer.global_rank) + 1_000_000_007) % 2**31
        if self.reference is not None:
            samples = self.calibration_sampler.sample(self.reference, prompts, num_samples=1, seed=seed)
        else:  # lora: the reference is the base model, adapters off
            with self.policy.disable_adapter():
                samples = self.calibration_sampler.sample(self.policy, prompts, num_samples=1, seed=seed)
        ids, attention, completion = right_padded(
            samples.input_ids,
            samples.attention_mask.long(),
            samples.completion_mask.long(),
            pad_id=data.tokenizer.pad_token_id,
        )
        return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        h, beta = self.hparams, self.settings.beta
        stats = self.sequence_stats(batch)
        chosen, rejected = stats.ratios()
        if h.calibration == "chosen":
            calibration = chosen
        else:
            rows = self.calibration_rows(batch)
            calibration = self._log_probs(self.policy, rows)[0] - self.reference_log_probs(rows)
        loss = vpo_loss(chosen, rejected, calibration, beta, h.alpha, h.value_sign)
        with torch.no_grad():
            value = value_regularizer(calibration.detach(), beta, h.alpha, h.value_sign)
            rewards_chosen, rewards_rejected = beta * chosen.detach(), beta * rejected.detach()
        return loss, {
            "value_term": value,
            "calibration_log_ratio": calibration.detach().mean(),
            "reward_accuracy": (rewards_chosen > rewards_rejected).float().mean(),
            "reward_margin": (rewards_chosen - rewards_rejected).mean(),
        }
