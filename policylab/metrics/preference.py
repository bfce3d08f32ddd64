"""Preference metrics as torchmetrics: accumulated over batches and synced across processes.

- :class:`RewardAccuracy`: fraction of pairs whose chosen response gets the higher implicit
  reward ``beta * log(pi / pi_ref)`` (or a reward model's score).
- :class:`RankingAccuracy`: fraction of pairs where the policy itself gives the chosen response
  the higher log-likelihood, summed or (``length_normalized``) per token.
- :class:`IdealizedRankingAccuracy`: the ranking accuracy a model that optimizes the DPO/RLHF
  objective perfectly would reach, from the reference model alone (Chen et al., 2024).
- :class:`WinRate`: how often sampled responses beat a baseline's under a programmatic judge
  (ties count half).

The reward margin is a plain ``torchmetrics.MeanMetric`` over ``chosen_reward - rejected_reward``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class _PairFraction(Metric):
    """Fraction of the pairs seen so far for which ``first > second``; a tie counts
    ``tie_credit`` (nothing here, half for :class:`WinRate`)."""

    full_state_update = False
    higher_is_better = True
    tie_credit = 0.0

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("wins", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("pairs", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def _count(self, first: Tensor, second: Tensor) -> None:
        if first.shape != second.shape:
            raise ValueError(
                f"{type(self).__name__}: the two sides have shapes {tuple(first.shape)} and {tuple(second.shape)}"
            )
        self.wins += (first > second).sum() + self.tie_credit * (first == second).sum()
        self.pairs += first.numel()

    def compute(self) -> Tensor:
        return self.wins / self.pairs


class RewardAccuracy(_PairFraction):
    """Fraction of pairs with ``chosen_reward > rejected_reward`` (DPO's implicit rewards
    ``beta * (log pi(y|x) - log pi_ref(y|x))``, or a reward model's scores)."""

    def update(self, chosen_reward: Tensor, rejected_reward: Tensor) -> None:
        self._count(chosen_reward, rejected_reward)


class RankingAccuracy(_PairFraction):
    """Fraction of pairs with ``log pi(y_w|x) > log pi(y_l|x)`` under the policy alone, the
    ranking accuracy of Chen et al. (2024). ``length_normalized=True`` compares log-likelihoods
    per completion token (pass the token counts)."""

    def __init__(self, length_normalized: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.length_normalized = length_normalized

    def update(
        self,
        chosen_logp: Tensor,
        rejected_logp: Tensor,
        chosen_tokens: Tensor | None = None,
        rejected_tokens: Tensor | None = None,
    ) -> None:
        if self.length_normalized:
            if chosen_tokens is None or rejected_tokens is None:
                raise ValueError("RankingAccuracy(length_normalized=True) needs chosen_tokens and rejected_tokens")
            chosen_logp, rejected_logp = chosen_logp / chosen_tokens, rejected_logp / rejected_tokens
        self._count(chosen_logp, rejected_logp)


class IdealizedRankingAccuracy(_PairFraction):
    """Chen et al., "Preference Learning Algorithms Do Not Learn Preference Rankings" (NeurIPS
    2024), Theorem 3.1: the optimum of the DPO/RLHF objective, ``pi* ∝ pi_ref exp(r*/beta)``
    with Bradley-Terry rewards, ranks ``y_w`` above ``y_l`` exactly when

        log pi_ref(y_w|x) - log pi_ref(y_l|x) + (1/beta) log(alpha / (1 - alpha)) > 0,

    where ``alpha`` is the fraction of raters who prefer ``y_w``. Unanimous labels (``alpha = 1``)
    give an infinite log-odds: the ideal model always ranks those pairs right."""

    def __init__(self, beta: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.beta = beta

    def update(
        self, ref_chosen_logp: Tensor, ref_rejected_logp: Tensor, preference_probability: Tensor | float = 1.0
    ) -> None:
        alpha = torch.as_tensor(preference_probability, dtype=ref_chosen_logp.dtype, device=ref_chosen_logp.device)
        if ((alpha < 0) | (alpha > 1)).any():
            raise ValueError("IdealizedRankingAccuracy: preference_probability must lie in [0, 1]")
        log_odds = torch.logit(alpha).expand_as(ref_chosen_logp)
        self._count(ref_chosen_logp - ref_rejected_logp + log_odds / self.beta, torch.zeros_like(ref_chosen_logp))


class WinRate(_PairFraction):
    """Fraction of prompts where the response scores above the baseline's response under a
    judge (for a correctness judge: right beats wrong); equal scores count half."""

    tie_credit = 0.5

    def update(self, scores: Tensor, baseline_scores: Tensor) -> None:
        self._count(torch.as_tensor(scores, dtype=torch.float), torch.as_tensor(baseline_scores, dtype=torch.float))
