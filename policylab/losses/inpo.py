"""INPO's loss: Zhang et al., "Iterative Nash Policy Optimization: Aligning LLMs with General
Preferences via No-Regret Learning" (ICLR 2025, arXiv:2407.00617).

INPO runs online mirror descent (OMD) on the KL-regularized preference game. With ``eta`` the
inverse step size of OMD (the paper's eta, 0.0075 in its experiments) and ``tau`` the KL strength of
the game (the paper's eta / 3), iteration ``t`` moves to

    pi_{t+1}(y | x)  ∝  pi_t(y | x)^(1 - tau/eta) * pi_ref(y | x)^(tau/eta) * exp(P(y > pi_t | x) / eta),

(written with the step size ``1 / eta`` this is ``pi_t^(1 - eta' tau) pi_ref^(eta' tau) exp(eta' P)``,
``eta' = 1 / eta``). Its normaliser and the win rate ``P(y > pi_t)`` need not be estimated: with

    h_t(pi, y, y') = log pi(y)/pi(y') - (tau/eta) log pi_ref(y)/pi_ref(y') - (1 - tau/eta) log pi_t(y)/pi_t(y'),

the target is the unique minimiser of the square loss over pairs ``y, y' ~ pi_t`` labelled by the
preference oracle (``y_w`` the preferred one),

    L_t(pi) = E[ (h_t(pi, y_w, y_l) - 1 / (2 eta))^2 ],

an IPO-like loss anchored to both the reference (the SFT model) and the previous iterate ``pi_t``.
"""

from __future__ import annotations

from torch import Tensor


def inpo_h(
    chosen: Tensor,
    rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    iterate_chosen: Tensor,
    iterate_rejected: Tensor,
    ref_weight: float,
) -> Tensor:
    """``h_t(pi, y_w, y_l)`` per pair ``[B]``: the policy's log-ratio of chosen to rejected minus
    ``ref_weight`` (``tau / eta``) times the reference's and ``1 - ref_weight`` times the previous
    iterate's (``pi_t``). All inputs are summed completion log-probs ``[B]``."""
    policy = chosen - rejected
    reference = ref_chosen - ref_rejected
    iterate = iterate_chosen - iterate_rejected
    return policy - ref_weight * reference - (1.0 - ref_weight) * iterate


def inpo_loss(
    chosen: Tensor,
    rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    iterate_chosen: Tensor,
    iterate_rejected: Tensor,
    eta: float,
    tau: float,
) -> Tensor:
    """INPO's per-pair loss ``(h_t(pi, y_w, y_l) - 1 / (2 eta))^2`` (``[B]``; see the module
    docstring): ``eta`` the OMD inverse step size (> 0), ``tau`` the KL strength toward the
    reference, ``0 <= tau <= eta`` (``tau = 0``: no pull to the reference, ``tau = eta``: the
    previous iterate drops out and the loss is IPO's with the reference as anchor)."""
    if eta <= 0 or not 0.0 <= tau <= eta:
        raise ValueError(f"INPO needs eta > 0 and 0 <= tau <= eta, got eta={eta}, tau={tau}")
    h = inpo_h(chosen, rejected, ref_chosen, ref_rejected, iterate_chosen, iterate_rejected, tau / eta)
    return (h - 1.0 / (2.0 * eta)) ** 2
