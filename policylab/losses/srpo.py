"""SRPO's offline loss L_alpha (Choi et al., "Self-Improving Robust Preference Optimization",
ICLR 2025, arXiv 2406.01660).

The game. A generator ``pi(y|x)`` and a self-improvement policy ``pi_dag(y'|x, y)`` (the same LM
reading the previous answer ``y`` in its prompt) play

    min_pi max_{pi_dag}  E_{x, y ~ pi, y' ~ pi_dag(.|x,y)} [ P(y' > y | x) ]
                         - beta KL(pi_dag || pi_ref | x, y) + beta KL(pi || pi_ref | x).

Its solution, derived here from that objective (writing ``h(y) = log pi(y|x)/pi_ref(y|x)`` and
``h_dag(y'|y) = log pi_dag(y'|x,y)/pi_ref(y'|x,y)``):

- the inner maximum is ``pi_dag(y'|x,y) = pi_ref(y'|x,y) exp(P(y' > y|x)/beta) / Z(x,y)``, with value
  ``beta log Z(x,y)``;
- the outer minimum of ``E_{y~pi}[beta log Z(x,y)] + beta KL(pi || pi_ref)`` is
  ``pi(y|x) = pi_ref(y|x) / (C(x) Z(x,y))``: the robust generator avoids answers that are easy to
  improve.

Eliminating the normalisers gives two identities that hold for every pair and that a preference
pair ``(y_w, y_l)`` with ``p = P(y_w > y_l | x)`` (1 for a hard label) can regress, IPO-style:

- self-improvement (one context ``c``, two revisions; ``Z(x,c)`` cancels, ``pi`` does not enter):
  ``beta (h_dag(y_w|c) - h_dag(y_l|c)) = P(y_w > c) - P(y_l > c)``, i.e. ``p - 1/2`` for ``c = y_l``
  and for ``c = y_w`` (``P(y > y) = 1/2``);
- robust (the two cross revisions and the generator; ``Z`` replaced by ``pi``):
  ``beta (h_dag(y_w|y_l) - h_dag(y_l|y_w)) + beta (h(y_w) - h(y_l)) = 2p - 1``.

``L_alpha = alpha * L_self + (1 - alpha) * L_robust`` with the squared residuals divided by
``beta^2`` (IPO's scale, as the ``ipo`` entry of the pairwise registry: log-ratios regressed to
``target / beta``); ``L_self`` averages its two contexts. ``alpha`` in ``(0, 1)`` trains both roles:
``alpha = 1`` leaves the generator untouched, ``alpha = 0`` leaves the improver's own preference
order unconstrained. The paper states L_alpha as a mix of two IPO-style squared terms weighted by
alpha; its exact printed form and default alpha were not readable here, so the terms above are
this derivation's (see the tests for the identities checked on a closed-form solution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SelfImprovementRatios:
    """Log-ratios ``log pi/pi_ref`` (summed over completion tokens), ``[B]`` each, of one batch of pairs.

    ``chosen``/``rejected``: the generator's ``h(y_w)``, ``h(y_l)``; ``revise_X_to_Y``: the
    self-improvement policy writing answer ``Y`` after previous answer ``X``, ``h_dag(Y|X)``."""

    chosen: Tensor
    rejected: Tensor
    revise_rejected_to_chosen: Tensor
    revise_rejected_to_rejected: Tensor
    revise_chosen_to_chosen: Tensor
    revise_chosen_to_rejected: Tensor


def srpo_terms(ratios: SelfImprovementRatios, beta: float, preference: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-pair ``(L_self, L_robust)``, ``[B]`` each (see the module docstring).

    ``L_self = 1/2 [ (d(y_l) - (p - 1/2)/beta)^2 + (d(y_w) - (p - 1/2)/beta)^2 ]`` with
    ``d(c) = h_dag(y_w|c) - h_dag(y_l|c)``;
    ``L_robust = ( h_dag(y_w|y_l) - h_dag(y_l|y_w) + h(y_w) - h(y_l) - (2p - 1)/beta )^2``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    p = torch.as_tensor(preference, dtype=ratios.chosen.dtype, device=ratios.chosen.device)
    r = ratios
    target = (p - 0.5) / beta
    after_rejected = r.revise_rejected_to_chosen - r.revise_rejected_to_rejected
    after_chosen = r.revise_chosen_to_chosen - r.revise_chosen_to_rejected
    self_term = 0.5 * ((after_rejected - target) ** 2 + (after_chosen - target) ** 2)
    cross = r.revise_rejected_to_chosen - r.revise_chosen_to_rejected
    robust_term = (cross + r.chosen - r.rejected - 2.0 * target) ** 2
    return self_term, robust_term


def srpo_loss(ratios: SelfImprovementRatios, beta: float, alpha: float, preference: Tensor | float = 1.0) -> Tensor:
    """Per-pair ``L_alpha = alpha * L_self + (1 - alpha) * L_robust`` (``[B]``); ``alpha`` in ``[0, 1]``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    self_term, robust_term = srpo_terms(ratios, beta, preference)
    return alpha * self_term + (1.0 - alpha) * robust_term
