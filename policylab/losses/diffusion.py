"""Preference losses for diffusion models, as pure functions of per-sample denoising errors.

Symbols: for a noised image ``x_t`` (noise ``eps``, timestep ``t``, condition ``c``) a model's
denoising error is ``err = ||eps_theta(x_t, t, c) - eps||^2`` averaged over the image
(:func:`denoising_error`); ``w`` is the preferred image of a pair, ``l`` the other, and ``ref``
the frozen reference model. Both images of a pair get the same ``eps`` and ``t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def denoising_error(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-sample mean squared error ``[N]`` of a ``[N, ...]`` prediction (epsilon, or whatever
    the scheduler's training target is) against its target."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


def diffusion_dpo_margin(
    model_err_w: Tensor, model_err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float = 5000.0
) -> Tensor:
    """The inner term of Diffusion-DPO (Wallace et al., "Diffusion Model Alignment Using Direct
    Preference Optimization", CVPR 2024, eq. 14 with the expectation over ``t`` sampled):

        -(beta / 2) * [(err_w - ref_err_w) - (err_l - ref_err_l)]

    positive when the model improves on the reference more for the preferred image than for the
    other. ``beta`` is the paper's 5000 for SD1.5 (diffusers' example writes 2500 without the
    1/2)."""
    return -0.5 * beta * ((model_err_w - ref_err_w) - (model_err_l - ref_err_l))


def diffusion_dpo_loss(
    model_err_w: Tensor, model_err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float = 5000.0
) -> Tensor:
    """Diffusion-DPO per pair: ``-log sigma(margin)`` with :func:`diffusion_dpo_margin`; equal to
    ``log 2`` when the model is its reference."""
    return -F.logsigmoid(diffusion_dpo_margin(model_err_w, model_err_l, ref_err_w, ref_err_l, beta))


def implicit_accuracy(margin: Tensor) -> Tensor:
    """Fraction of pairs whose Diffusion-DPO margin is positive, ties counting half (as the
    diffusers example logs it)."""
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def diffusion_dro_loss(expert_diff: Tensor, policy_diff: Tensor, margin: float = 0.001) -> Tensor:
    """Diffusion-DRO (basiclab/DiffusionDRO): a hinge ranking loss between expert images and the
    policy's own samples, each measured as the model's denoising error minus the reference's
    on the same noised input (``expert_diff`` on expert images with fresh noise,
    ``policy_diff`` on stored sampling states with the policy's own noise prediction as target):
    ``max(expert_diff - policy_diff + margin, 0)``, margin 0.001. Lowering it makes the model
    denoise expert images better, relative to the reference, than its own samples."""
    return torch.relu(expert_diff - policy_diff + margin)


def pseudo_huber(difference: Tensor, c: float = 0.001) -> Tensor:
    """Self-NPO's regression loss per element: ``sqrt(d^2 + c^2) - c`` (c = 0.001), quadratic
    near zero and linear far from it."""
    return torch.sqrt(difference.float().pow(2) + c * c) - c


def smoothed_preference(score_w: Tensor, score_l: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    """SmPO's smoothed probability that ``w`` is preferred (arXiv 2506.02698, "Smoothed Preference
    Optimization via ReNoise Inversion for Aligning Diffusion Models with Varied Human
    Preferences", ICML 2025): reward scores min-max normalized with fixed bounds ``(low, high)``
    (the authors' PickScore bounds are 0.1154 and 0.2820), then
    ``p = exp(n_w) / (exp(n_w) + exp(n_l)) = sigma(n_w - n_l)``."""
    span = high - low
    if span <= 0:
        raise ValueError(f"score bounds must satisfy low < high, got ({low}, {high})")
    return torch.sigmoid((score_w - score_l) / span)


def smpo_loss(
    model_err_w: Tensor,
    model_err_l: Tensor,
    ref_err_w: Tensor,
    ref_err_l: Tensor,
    preference: Tensor,
    beta: float = 5000.0,
    scale: float = 10.0,
) -> Tensor:
    """SmPO per pair: Diffusion-DPO with its margin scaled by ``(2p - 1) * scale`` for the
    smoothed preference ``p`` (the paper's ``(2 alpha - gamma)`` with ``gamma = 1``; the authors'
    code multiplies by a further 10):
    ``-log sigma(-(beta/2) (2p - 1) scale [(err_w - ref_err_w) - (err_l - ref_err_l)])``.
    A pair judged a near tie (``p`` near 1/2) barely moves the model; log 2 at the reference."""
    margin = diffusion_dpo_margin(model_err_w, model_err_l, ref_err_w, ref_err_l, beta)
    return -F.logsigmoid((2 * preference - 1) * scale * margin)


def seppo_loss(
    model_err_w: Tensor,
    ref_err_w: Tensor,
    model_err_s: Tensor,
    ref_err_s: Tensor,
    beta: float = 5000.0,
    criterion: str = "indicator",
) -> Tensor:
    """SePPO per sample (arXiv 2410.05255, "SePPO: Semi-Policy Preference Optimization for Diffusion
    Alignment", 2024): the winning image ``w`` against a sample ``s`` that a reference
    checkpoint generated for the same caption, all errors under one shared noise and timestep.

    The anchor criterion compares the model with the reference on the winning image:
    ``D = ref_err_w - model_err_w``; ``D > 0`` (the model denoises the real winner better than the
    reference does) judges the reference sample a likely loser. Then

        -log sigma(-(beta/2) [(err_w - ref_err_w) - S (err_s - ref_err_s)])

    with ``S = 1`` for a likely loser (Diffusion-DPO with ``s`` as the loser) and, when the
    reference is the better one, ``S = 0`` (``criterion="indicator"``: only the winner term,
    an SFT-like update) or ``S = -1`` (``criterion="sign"``: ``s`` counts as a second winner).
    ``S`` is a decision, not differentiated."""
    anchor = (ref_err_w - model_err_w).detach()
    if criterion == "indicator":
        sign = (anchor > 0).to(model_err_w.dtype)
    elif criterion == "sign":
        sign = torch.sign(anchor).to(model_err_w.dtype)
    else:
        raise ValueError(f"criterion must be 'indicator' or 'sign', got {criterion!r}")
    inner = -0.5 * beta * ((model_err_w - ref_err_w) - sign * (model_err_s - ref_err_s))
    return -F.logsigmoid(inner)
