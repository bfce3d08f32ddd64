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


def diffusion_dpo_margin(model_err_w: Tensor, model_err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float = 5000.0) -> Tensor:
    """The inner term of Diffusion-DPO (Wallace et al., "Diffusion Model Alignment Using Direct
    Preference Optimization", CVPR 2024, eq. 14 with the expectation over ``t`` sampled):

        -(beta / 2) * [(err_w - ref_err_w) - (err_l - ref_err_l)]

    positive when the model improves on the reference more for the preferred image than for the
    other. ``beta`` is the paper's 5000 for SD1.5 (diffusers' example writes 2500 without the
    1/2)."""
    return -0.5 * beta * ((model_err_w - ref_err_w) - (model_err_l - ref_err_l))


def diffusion_dpo_loss(model_err_w: Tensor, model_err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float = 5000.0) -> Tensor:
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
