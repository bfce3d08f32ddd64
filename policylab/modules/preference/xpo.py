"""XPO: Exploratory Preference Optimization (Xie et al., 2024, "Exploratory Preference
Optimization: Harnessing Implicit Q*-Approximation for Sample-Efficient RLHF", arXiv:2405.21046;
HF TRL's XPOTrainer).

XPO is online DPO with an exploration bonus. Per prompt, one response ``y ~ pi_theta`` and one
``y_ref ~ pi_ref``; the judge orders them into a pair ``(y_w, y_l)``; the step minimises DPO's
(or IPO's) loss on the pair plus ``alpha * log pi_theta(y_ref | x)`` (the paper's Algorithm 1;
:func:`policylab.losses.xpo.xpo_loss`). The extra term lowers the policy's probability of the
reference's responses, which by the paper's argument makes the policy optimistic about, and so
sample, responses the reference rarely gives (its implicit ``Q*`` view of DPO: the bonus is
a KL-style optimism term). TRL's default ``alpha = 1e-5``.

Here :class:`XPO` is the :class:`~policylab.modules.preference.OnlineDPO` loop with: two
completions per prompt, row ``2i`` from the policy and row ``2i + 1`` from the reference (under
LoRA: the policy with its adapters off); the scalar judge's scores (minus ``missing_eos_penalty``
when set) order each pair; the field ``chosen_is_reference`` (1 when the reference's sample won)
stored with the pair, so the loss finds ``y_ref``'s log-prob on either side. The pairwise loss is
the registry's ``loss_type`` (TRL: ``sigmoid`` or ``ipo``; note that the registry's ``ipo`` uses
per-token averaged log-ratios, TRL's XPO summed ones).

Ties: TRL keeps a pair whose two scores are equal, the policy's sample chosen; here, as in
OnlineDPO, it is dropped and counted (``online/dropped_ties``) unless ``keep_ties: true``, which
then gives TRL's rule (the policy's sample is first). A dropped pair's exploration term is dropped
with it. ``online/kl`` is estimated on the policy's samples only. Per step, besides OnlineDPO's:
``train/pair_loss`` and ``train/reference_sample_log_prob`` (mean ``log pi_theta(y_ref)``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.datamodules.online import Pairs
from policylab.losses.xpo import xpo_loss
from policylab.modules.preference.nash_md import pair_completions, policy_rows
from policylab.modules.preference.online_dpo import OnlineDPO
from policylab.sampling.completions import Completions


class XPO(OnlineDPO):
    """Online DPO plus XPO's exploration term on the reference's samples (see the module docstring).

    Args:
        model: the SFT model (policy and fixed reference start there).
        judge: a :class:`~policylab.judges.ScalarJudge` (reward model, verifier) or a check's dotted path.
        alpha: the weight of ``log pi_theta(y_ref | x)`` in the loss (TRL's 1e-5).
        kwargs: the loss (``loss_type``: TRL's ``sigmoid`` or ``ipo``, ``beta`` 0.1), sampling,
            iteration and optimizer settings of :class:`~policylab.modules.preference.OnlineDPO`
            (TRL's: temperature 0.9, 64 new tokens, lr 5e-7, fresh samples every step).
    """

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        alpha: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        if alpha < 0:
            raise ValueError(f"alpha (the weight of the exploration term) must be >= 0, got {alpha}")
        super().__init__(model, judge=judge, num_generations=2, pair_rule="random_pair", **kwargs)
        if not self.needs_reference:
            raise ValueError(
                f"XPO samples from the reference and trains on log-ratios to it: loss_type "
                f"{self.objective.loss_type!r} has no reference"
            )

    def sample_completions(self, prompts: list[str], seed: int) -> Completions:
        """Per prompt, ``y`` from the policy (row ``2i``) and ``y_ref`` from the reference (row ``2i + 1``)."""
        own = self.sampler.sample(self.policy, prompts, num_samples=1, seed=seed)
        other_seed = (seed + 1_000_003) % 2**31
        if self.reference is not None:
            from_reference = self.sampler.sample(self.reference, prompts, num_samples=1, seed=other_seed)
        else:
            with self.policy.disable_adapter():  # LoRA: the reference is the base model
                from_reference = self.sampler.sample(self.policy, prompts, num_samples=1, seed=other_seed)
        return pair_completions(own, from_reference, self.sampler.pad_token_id)

    def extra_pair_fields(self, scores: Tensor, pairs: Pairs) -> dict[str, Tensor]:
        """``chosen_is_reference``: 1.0 where the pair's chosen row is the reference's sample (odd row)."""
        return {"chosen_is_reference": (pairs.chosen % 2).float()}

    @torch.no_grad()
    def _kl_estimate(self, rows: dict[str, Tensor]) -> Tensor:
        """``KL(pi_theta || pi_ref)`` on the policy's samples only (the reference's are not draws of pi)."""
        return super()._kl_estimate(policy_rows(rows))

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        stats = self.sequence_stats(batch)
        pair_loss = self.objective(stats, self.settings.beta)
        from_reference = batch["chosen_is_reference"].bool()
        reference_sample = torch.where(from_reference, stats.chosen, stats.rejected)
        loss = xpo_loss(pair_loss, reference_sample, self.hparams.alpha).mean()
        chosen, rejected = (self.settings.beta * ratio.detach() for ratio in stats.ratios())
        return loss, {
            "pair_loss": pair_loss.detach().mean(),
            "reference_sample_log_prob": reference_sample.detach().mean(),
            "reward_accuracy": (chosen > rejected).float().mean(),
            "reward_margin": (chosen - rejected).mean(),
        }
