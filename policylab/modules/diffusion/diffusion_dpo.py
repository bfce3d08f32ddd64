"""Diffusion-DPO (Wallace et al., "Diffusion Model Alignment Using Direct Preference
Optimization", CVPR 2024): DPO for a diffusion model, with the ELBO in place of the
likelihood. Both images of a pair are noised with the same noise and timestep; the loss asks
the UNet to denoise the preferred image better, relative to the frozen reference, than the
other one."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.losses.diffusion import denoising_error, diffusion_dpo_loss, diffusion_dpo_margin, implicit_accuracy
from policylab.modules.diffusion.base import DiffusionModule


class DiffusionDPO(DiffusionModule):
    """``-log sigma(-(beta/2) [(err_w - ref_err_w) - (err_l - ref_err_l)])`` per pair, with the
    per-sample denoising errors of :func:`~policylab.losses.diffusion.denoising_error`. ``beta``
    5000 is the paper's for SD1.5 in latent space. The reference is a frozen copy of the start,
    or with ``lora`` the UNet with its adapters disabled. Batches: ``caption``, ``images``
    ``[B, 2, C, H, W]`` (preferred first; :class:`ImagePairDataModule`). Logs ``train/loss``,
    ``train/implicit_accuracy`` (share of pairs with a positive margin), and the model's and
    reference's error gaps ``train/model_diff``, ``train/ref_diff``."""

    def __init__(
        self,
        model: Any,
        beta: float = 5000.0,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, lora, reference=True)
        self.record_hyperparameters()

    def pair_errors(self, batch: dict):
        """Per-pair denoising errors ``(err_w, err_l, ref_err_w, ref_err_l)`` of the model and the
        reference on one draw of noise and timestep shared within each pair."""
        images = batch["images"]
        pairs = len(images)
        x0 = self.model.encode_images(images.flatten(0, 1))  # [2B]: w0, l0, w1, l1, ...
        noise = torch.randn_like(x0[::2]).repeat_interleave(2, dim=0)
        t = self.model.random_timesteps(pairs).repeat_interleave(2)
        text = self.model.encode_text(batch["caption"]).repeat_interleave(2, dim=0)
        x_t, t, target = self.noised_pairs(x0, noise, t, text)
        err = denoising_error(self.model.predict(x_t, t, text), target).view(pairs, 2)
        with torch.no_grad(), self.reference_unet() as reference:
            ref_err = denoising_error(self.model.predict(x_t, t, text, reference), target).view(pairs, 2)
        return err[:, 0], err[:, 1], ref_err[:, 0], ref_err[:, 1]

    def noised_pairs(self, x0: Tensor, noise: Tensor, t: Tensor, text: Tensor):
        """``(x_t, t, target)`` of the ``2B`` images: forward noising (SmPO may invert instead)."""
        return self.noised(x0, noise, t)

    def pair_loss(self, errors: tuple[Tensor, ...], batch: dict) -> Tensor:
        """The loss per pair from ``(err_w, err_l, ref_err_w, ref_err_l)`` (SmPO changes this)."""
        return diffusion_dpo_loss(*errors, beta=self.hparams.beta)

    def loss_and_margin(self, batch: dict) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        errors = err_w, err_l, ref_err_w, ref_err_l = self.pair_errors(batch)
        margin = diffusion_dpo_margin(*errors, beta=self.hparams.beta)
        stats = {"model_diff": (err_w - err_l).mean().detach(), "ref_diff": (ref_err_w - ref_err_l).mean()}
        return self.pair_loss(errors, batch).mean(), margin, stats

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        loss, margin, stats = self.loss_and_margin(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{type(self).__name__}: non-finite loss at step {self.global_step}")
        return loss, {"implicit_accuracy": implicit_accuracy(margin.detach()), **stats}
