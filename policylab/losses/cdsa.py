"""CDSA's score matching and action adjustment (Liu, Yang, Li, "CDSA: Conservative Denoising
Score-based Algorithm for Offline Reinforcement Learning", arXiv 2406.07541, 2024).

What the paper states (abstract; summaries of its method): denoising score-matching models learn
the gradient field of the dataset's density, not the density; at test time they adjust the action
of a pre-trained offline policy towards high-density regions (no retraining); an inverse-dynamics
model turns state-space score guidance into an action correction; the MDP is deterministic and
continuous. The paper's own equations, noise levels and step sizes could not be read here (no
public code; only its abstract and summaries were reachable), so the equations below are this
file's numbering (C1)-(C5), derived from that description and from the score-matching papers.

(C1) Noise levels: a geometric sequence ``sigma_1 > ... > sigma_L`` (Song & Ermon, NeurIPS 2019).

(C2) Denoising score matching (Vincent 2011), with Song & Ermon's weight ``lambda(sigma) = sigma^2``:

    L(theta) = E_{x ~ D, i, eps ~ N(0, I)} 1/2 || sigma_i s_theta(x + sigma_i eps, sigma_i) + eps ||^2,

whose minimizer is ``s_theta(x~, sigma) = grad log p_sigma(x~)``, the score of the data smoothed by
``N(0, sigma^2 I)``.

(C3) Denoising step (Tweedie: ``E[x | x~] = x~ + sigma^2 grad log p_sigma(x~)``), a fraction ``eta``
of it:

    x <- x + eta sigma^2 s_theta(x, sigma).

(C4) Action adjustment: ``K`` steps (C3) of the policy's action under the action score
``s(a, sigma | s) ~ grad_a log p_sigma(a | s)`` (= ``grad_a log p_sigma(s, a)``), clipped to the box.

(C5) State guidance through inverse dynamics: in a deterministic MDP ``s' = f(s, a)`` and an
inverse-dynamics model ``I(s, s')`` returns the action leading from ``s`` to ``s'``. The next state
``s^' = f(s, a)`` is denoised by (C3) under the state score, ``s-' = s^' + sigma_s^2 s_phi(s^', sigma_s)``,
and the action moves by the change of the inverse dynamics' answer:

    a <- a + w (I(s, s-') - I(s, s^')).

With exact models ``a + I(s, s-') - I(s, s^') = I(s, s-')``, the action that reaches the denoised
next state; taking the difference cancels the inverse model's bias at ``s^'`` to first order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, float], Tensor]


def geometric_noise_levels(sigma_max: float, sigma_min: float, num_levels: int) -> Tensor:
    """(C1) ``num_levels`` noise levels from ``sigma_max`` down to ``sigma_min``, equal ratios."""
    if not 0.0 < sigma_min <= sigma_max or num_levels < 1:
        raise ValueError(
            f"noise levels need 0 < sigma_min <= sigma_max and num_levels >= 1, "
            f"got sigma_max={sigma_max}, sigma_min={sigma_min}, num_levels={num_levels}"
        )
    if num_levels == 1:
        return torch.tensor([float(sigma_max)])
    return torch.logspace(torch.log10(torch.tensor(sigma_max)), torch.log10(torch.tensor(sigma_min)), num_levels)


def denoising_score_matching_loss(score: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """(C2) ``mean_b 1/2 || sigma_b score_b + noise_b ||^2`` for ``score = s(x + sigma noise, sigma)``.

    ``score`` and ``noise`` are ``[B, D]``; ``sigma`` is ``[B]``, ``[B, 1]`` or a number."""
    sigma = torch.as_tensor(sigma, dtype=score.dtype, device=score.device).reshape(-1, 1)
    return 0.5 * (sigma * score + noise).pow(2).sum(dim=-1).mean()


def denoise(x: Tensor, score_fn: ScoreFn, sigmas: Sequence[float], step_size: float = 1.0) -> Tensor:
    """(C3) applied once per entry of ``sigmas`` (in order): ``x <- x + eta sigma^2 score_fn(x, sigma)``.

    Coarse-to-fine levels with ``eta = 1`` give a deterministic annealed denoiser; one small level
    repeated with ``eta < 1`` gives a gentle pull towards the data."""
    for sigma in sigmas:
        x = x + step_size * float(sigma) ** 2 * score_fn(x, float(sigma))
    return x


def cdsa_adjust_action(
    obs: Tensor,
    action: Tensor,
    action_score: Callable[[Tensor, float, Tensor], Tensor],
    sigma: float = 0.1,
    step_size: float = 0.5,
    steps: int = 2,
    max_action: float = 1.0,
    state_score: ScoreFn | None = None,
    forward_model: Callable[[Tensor, Tensor], Tensor] | None = None,
    inverse_dynamics: Callable[[Tensor, Tensor], Tensor] | None = None,
    state_sigma: float = 0.1,
    state_weight: float = 1.0,
) -> Tensor:
    """The adjusted action: (C4) ``steps`` action-denoising steps, then (C5) state guidance when
    ``state_weight > 0`` and the three state models are given; clipped to ``[-max_action, max_action]``.

    ``action_score(a, sigma, s)``, ``state_score(s', sigma)``, ``forward_model(s, a) -> s'`` and
    ``inverse_dynamics(s, s') -> a`` are callables (networks or analytic functions); states are
    the (normalized) states the models were trained on."""
    action = action.clamp(-max_action, max_action)
    for _ in range(steps):
        action = denoise(action, lambda a, level: action_score(a, level, obs), [sigma], step_size)
        action = action.clamp(-max_action, max_action)
    models = (state_score, forward_model, inverse_dynamics)
    if state_weight > 0 and any(m is not None for m in models):
        if any(m is None for m in models):
            raise ValueError("state guidance needs state_score, forward_model and inverse_dynamics together")
        predicted = forward_model(obs, action)
        target = denoise(predicted, state_score, [state_sigma])
        action = action + state_weight * (inverse_dynamics(obs, target) - inverse_dynamics(obs, predicted))
    return action.clamp(-max_action, max_action)
