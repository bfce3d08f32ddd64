"""SmPO-Diffusion (arXiv 2506.02698, "Smoothed Preference Optimization via ReNoise Inversion for
Aligning Diffusion Models with Varied Human Preferences", ICML 2025): Diffusion-DPO whose pairs
weigh by how clearly a reward model prefers the winner, with the noised images optionally found
by ReNoise inversion instead of forward noising."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.losses.diffusion import smoothed_preference, smpo_loss
from policylab.modules.diffusion.diffusion_dpo import DiffusionDPO


class SmPO(DiffusionDPO):
    """Per pair ``-log sigma((2p - 1) * scale * margin)`` (:func:`~policylab.losses.diffusion.smpo_loss`),
    ``margin`` Diffusion-DPO's and ``p`` the smoothed preference of the pair's reward ``scores``
    (``[B, 2]``, winner first; :class:`ImagePairDataModule` with ``score_columns``), normalized
    by ``score_range``. ``beta`` 5000 and ``scale`` 10 are the authors' defaults.

    ``renoise_steps > 0`` replaces forward noising by ReNoise inversion (the paper's 5 for SD1.5):
    from the clean image, that many deterministic DDIM inversion steps of the policy (each
    averaging two noise predictions) reach ``x_t``, and the noise target is solved back from it,
    ``(x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``."""

    def __init__(
        self,
        model: Any,
        beta: float = 5000.0,
        scale: float = 10.0,
        score_range: tuple[float, float] = (0.0, 1.0),
        renoise_steps: int = 0,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, beta, lr, weight_decay, lora)
        self.record_hyperparameters()

    def pair_loss(self, errors: tuple[Tensor, ...], batch: dict) -> Tensor:
        if "scores" not in batch:
            raise KeyError(
                "SmPO needs reward scores per image: set the datamodule's score_columns (e.g. [score_0, score_1])"
            )
        low, high = self.hparams.score_range
        preference = smoothed_preference(batch["scores"][:, 0], batch["scores"][:, 1], low, high)
        return smpo_loss(*errors, preference, beta=self.hparams.beta, scale=self.hparams.scale)

    def noised_pairs(self, x0: Tensor, noise: Tensor, t: Tensor, text: Tensor):
        if self.hparams.renoise_steps == 0:
            return super().noised_pairs(x0, noise, t, text)
        x_t = self.renoise(x0, t, text)
        abar = self.model.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        return x_t, t, self.model.target(x0, (x_t - abar.sqrt() * x0) / (1 - abar).sqrt(), t)

    @torch.no_grad()
    def renoise(self, x0: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """``x_t`` by ``renoise_steps`` deterministic DDIM inversion steps of the policy from
        ``x0``, on an even grid from 0 to each sample's ``t``; each step averages the noise
        predicted at the current point and at the point one plain inversion step reaches."""
        steps, abar = self.hparams.renoise_steps, self.model.alphas_cumprod
        shape = (-1, *([1] * (x0.dim() - 1)))
        z = x0
        for i in range(steps):
            now, nxt = (t * i) // steps, (t * (i + 1)) // steps
            a_now, a_next = abar[now].view(shape), abar[nxt].view(shape)
            first = self.model.noise_estimate(z, now, self.model.predict(z, now, text))
            ahead = _inversion_step(z, first, a_now, a_next)
            second = self.model.noise_estimate(ahead, nxt, self.model.predict(ahead, nxt, text))
            z = _inversion_step(z, (first + second) / 2, a_now, a_next)
        return z


def _inversion_step(z: Tensor, eps: Tensor, a_now: Tensor, a_next: Tensor) -> Tensor:
    """One deterministic DDIM inversion step from ``z`` at ``abar = a_now`` to ``a_next`` with noise ``eps``."""
    clean = (z - (1 - a_now).sqrt() * eps) / a_now.sqrt()
    return a_next.sqrt() * clean + (1 - a_next).sqrt() * eps
