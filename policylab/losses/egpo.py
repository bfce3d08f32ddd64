"""EGPO's loss: online IPO with its target from a pairwise preference oracle.

Zhou, Fazel, Du, "Extragradient Preference Optimization (EGPO): Beyond Last-Iterate Convergence for
Nash Learning from Human Feedback" (COLM 2025, arXiv 2503.08942). The game is the constant-sum
preference game ``P(pi > pi')`` regularized by ``beta * KL(pi || pi_ref)``; its mirror-descent
(and extragradient) steps are gradient steps on an online variant of IPO (Azar et al., 2024) whose
target is a difference of preferences against an opponent sample ``y'' ~ pi_s``:

    L(theta; pi_s) = E_{y, y' ~ mu, y'' ~ pi_s} [ ( h_theta(y, y') - (P(y > y'') - P(y' > y'')) / beta )^2 ],
    h_theta(y, y') = log pi_theta(y) / pi_ref(y) - log pi_theta(y') / pi_ref(y'),

with ``mu`` any sampling distribution of full support (the authors: ``pi_s``, or its geometric
mixture with ``pi_ref``, at temperature 2 and top-k 10). When ``y, y'`` and ``y''`` are drawn from the
same distribution, the authors' code replaces the target by ``(P(y > y') - 1/2) / beta`` (same
expectation, one judge call fewer, lower variance): :func:`variance_reduced_preferences`.
The authors' code (``lms/trainers/extragradient_trainer.py``, ``_compute_losses``) averages the
squared terms over the batch and, by default (``normalize_logprobs``), uses per-token averaged
log-probabilities in ``h``; the caller chooses what it passes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def online_ipo_loss(
    ratio_y: Tensor, ratio_y_prime: Tensor, preference_y: Tensor, preference_y_prime: Tensor, beta: float
) -> Tensor:
    """Per-pair online IPO loss ``(h - (P(y > y'') - P(y' > y'')) / beta)^2`` (``[B]``).

    ``ratio_y``, ``ratio_y_prime``: the policy-to-reference log-ratios ``log pi_theta / pi_ref`` of
    ``y`` and ``y'`` (summed or per-token averaged); ``preference_y``, ``preference_y_prime``: the
    oracle's ``P(y > y'')`` and ``P(y' > y'')`` (targets: no gradient flows into them); ``beta``: the
    KL coefficient of the regularized game (the authors' 0.1)."""
    if not beta > 0:
        raise ValueError(f"beta (the KL coefficient of the game) must be > 0, got {beta}")
    target = (preference_y.detach() - preference_y_prime.detach()).to(ratio_y.dtype) / beta
    return (ratio_y - ratio_y_prime - target) ** 2


def variance_reduced_preferences(preference_y_over_y_prime: Tensor) -> tuple[Tensor, Tensor]:
    """The preferences ``(P(y > y'), 1/2)`` that stand for ``(P(y > y''), P(y' > y''))`` when
    ``y, y', y''`` come from one distribution (the authors' ``_compute_prefs`` without ``y''``):
    the target becomes ``(P(y > y') - 1/2) / beta``."""
    return preference_y_over_y_prime, torch.full_like(preference_y_over_y_prime, 0.5)
