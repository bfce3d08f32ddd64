"""RO2O math (Wen, Yu, Yang, Chen, Bai, Wang, "Towards Robust Offline-to-Online Reinforcement
Learning via Uncertainty and Smoothness", arXiv:2309.16973; authors' code BattleWen/RO2O,
``algorithms/offline/ro2o_mujoco.py``): the perturbed states and the three regularizers that RO2O
adds to SAC-N. The TD loss and the actor's Q term are SAC's (:mod:`policylab.losses.sac`).

Layout of the perturbed copies: ``n`` copies per state, row ``b * n + j`` is ``s_b + delta_j``;
losses reshape per-copy values to ``[..., B, n]``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_perturbations(n: int, obs_dim: int, eps: float, like: Tensor, generator: torch.Generator | None = None):
    """``n`` offsets ``delta_j ~ U[-eps, eps]^obs_dim`` (``[n, obs_dim]``), one set shared by every
    state of the batch, as the authors draw them (a fresh set for each regularizer)."""
    u = torch.rand((n, obs_dim), device=like.device, dtype=like.dtype, generator=generator)
    return (2.0 * u - 1.0) * eps


def perturbed_states(obs: Tensor, deltas: Tensor) -> Tensor:
    """``s^_{b,j} = s_b + delta_j`` as ``[B * n, obs_dim]`` (row ``b * n + j``)."""
    return (obs.unsqueeze(1) + deltas.unsqueeze(0)).reshape(-1, obs.shape[-1])


def q_smoothness_loss(q_perturbed: Tensor, q_clean: Tensor, tau: float = 0.2) -> Tensor:
    """Q-smoothness (paper eq. for ``L_Qsmooth``, unweighted): with ``D_ij = Q_i(s^_j, a) - Q_i(s, a)``,
    ``mean_b max_j mean_i [(1 - tau) * max(D, 0)^2 + tau * min(D, 0)^2]``.

    ``q_perturbed`` is ``[E, B * n]`` (copies laid out as :func:`perturbed_states`), ``q_clean``
    ``[E, B]``; both carry gradients (the authors detach neither). ``tau = 0.2`` penalizes a rise
    of Q under perturbation four times more than a drop. The max passes its gradient to the worst
    copy alone, so the same loss and gradient come from that copy only (``n = 1``): see
    :func:`worst_copies`.
    """
    return _smoothness_per_copy(q_perturbed, q_clean, tau).max(dim=-1).values.mean()


def worst_copies(q_perturbed: Tensor, q_clean: Tensor, tau: float = 0.2) -> Tensor:
    """The index ``j*`` of each state's worst copy under :func:`q_smoothness_loss` (``[B]``); call it
    without gradients, then :func:`q_smoothness_loss` on ``Q(s^_{b, j*}, a)`` alone gives the full
    loss's value and gradient at a twentieth of the backward pass."""
    return _smoothness_per_copy(q_perturbed, q_clean, tau).argmax(dim=-1)


def _smoothness_per_copy(q_perturbed: Tensor, q_clean: Tensor, tau: float) -> Tensor:
    """``mean_i [(1 - tau) * max(D_ij, 0)^2 + tau * min(D_ij, 0)^2]`` as ``[B, n]``."""
    e, b = q_clean.shape
    diff = q_perturbed.reshape(e, b, -1) - q_clean.unsqueeze(-1)
    return ((1.0 - tau) * diff.clamp(min=0).square() + tau * diff.clamp(max=0).square()).mean(dim=0)


def ood_uncertainty_loss(q_ood: Tensor, uncertainty_weight: Tensor | float) -> Tensor:
    """OOD penalty (``L_ood``, unweighted): members regress onto the stop-gradient pessimistic target
    ``Q_i(s^, a^) - alpha_u * std_i Q(s^, a^)`` (unbiased std over the ensemble), ``a^ ~ pi(s^)``:
    ``mean_{i,m} (Q_i - sg(Q_i - alpha_u * std))^2``. ``q_ood`` is ``[E, M]``. Its value is
    ``alpha_u^2 * mean(std^2)``; its gradient lowers each member by ``alpha_u * std`` per unit."""
    target = (q_ood - uncertainty_weight * q_ood.std(dim=0, keepdim=True)).detach()
    return (q_ood - target).square().mean()


def decayed_uncertainty_weight(weight: Tensor, decay: Tensor | float, minimum: float) -> Tensor:
    """The schedule of ``alpha_u``, applied once per critic update: ``max(alpha_u - decay, minimum)``."""
    return (weight - decay).clamp(min=minimum)


def symmetric_gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """``KL(p || q) + KL(q || p)`` of diagonal Gaussians, summed over the last dimension:
    ``sum_a [(s_p^2 + d^2) / (2 s_q^2) + (s_q^2 + d^2) / (2 s_p^2) - 1]``, ``d = mu_p - mu_q``
    (the log-ratio terms cancel)."""
    var_p, var_q = (2.0 * log_std_p).exp(), (2.0 * log_std_q).exp()
    d2 = (mean_p - mean_q).square()
    return ((var_p + d2) / (2.0 * var_q) + (var_q + d2) / (2.0 * var_p) - 1.0).sum(dim=-1)


def policy_smoothness_loss(mean: Tensor, log_std: Tensor, mean_perturbed: Tensor, log_std_perturbed: Tensor) -> Tensor:
    """Policy smoothness (``L_Psmooth``, unweighted): the symmetric KL between the pre-tanh Gaussians
    at ``s`` and at its worst perturbed copy, ``mean_b max_j [KL(pi(s) || pi(s^_j)) + KL(pi(s^_j) || pi(s))]``.

    ``mean``/``log_std`` are ``[B, A]``; the perturbed ones ``[B * n, A]`` (:func:`perturbed_states`
    layout). Gradients flow through both sides, as in the authors' code.
    """
    b, a = mean.shape
    kl = symmetric_gaussian_kl(
        mean.unsqueeze(1), log_std.unsqueeze(1), mean_perturbed.reshape(b, -1, a), log_std_perturbed.reshape(b, -1, a)
    )
    return kl.max(dim=-1).values.mean()
