"""Denoising training of a text-to-image model on (caption, image) rows: pretraining the tiny
model of the shapes task, or supervised fine-tuning on good images (Ho et al., 2020, the
simple loss; captions dropped at a rate so classifier-free guidance works, Ho & Salimans, 2022)."""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor

from policylab.losses.diffusion import denoising_error
from policylab.modules.diffusion.base import DiffusionModule


class DiffusionSFT(DiffusionModule):
    """Minimizes ``||eps_theta(x_t, t, c) - eps||^2`` over uniform timesteps; each caption is
    replaced by the empty one with probability ``caption_dropout``. Batches: ``caption`` (list
    of str) and ``images`` ``[B, C, H, W]`` in ``[-1, 1]`` (:class:`ImageDataModule`)."""

    def __init__(
        self,
        model: Any,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        caption_dropout: float = 0.1,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, lora)
        self.record_hyperparameters()
        self._rng = random.Random(0)

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        captions = ["" if self._rng.random() < self.hparams.caption_dropout else c for c in batch["caption"]]
        x0 = self.model.encode_images(batch["images"])
        x_t, t, target = self.noised(x0)
        return denoising_error(self.model.predict(x_t, t, self.model.encode_text(captions)), target).mean(), {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """The loss on noise and timesteps fixed per batch index (comparable across evaluations),
        every caption kept."""
        x0 = self.model.encode_images(batch["images"])
        generator = torch.Generator(device=x0.device).manual_seed(batch_idx)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t, t, target = self.noised(x0, noise, self.model.random_timesteps(len(x0), generator))
        loss = denoising_error(self.model.predict(x_t, t, self.model.encode_text(batch["caption"])), target).mean()
        self.log_step("val", loss, {}, len(x0))
