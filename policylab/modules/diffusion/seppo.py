"""SePPO ("SePPO: Semi-Policy Preference Optimization for Diffusion Alignment", arXiv 2410.05255,
2024; later SSPO): preference optimization from winning images alone. A previous checkpoint,
drawn at random from those kept (Random Checkpoint Replay), is the reference: it generates the
image that takes the loser's place, and an anchor criterion on the real winner decides whether
that sample is treated as a loser (a DPO update) or not (an SFT-like update on the winner)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import torch
from torch import Tensor

from policylab.losses.diffusion import denoising_error, seppo_loss
from policylab.modules.diffusion.base import DiffusionModule


class SePPO(DiffusionModule):
    """Every ``checkpoint_every`` steps the current UNet weights join the reference pool (the
    starting weights are its first member; at most ``max_checkpoints`` are kept, the oldest
    after the first dropped: the reviews report 7 kept, one every 30 updates). Each step draws
    one reference uniformly from the pool, samples one image per caption with it
    (``num_inference_steps`` DDIM steps, ``guidance_scale``), and minimizes
    :func:`~policylab.losses.diffusion.seppo_loss` on the winner and that sample under one
    shared noise and timestep. Batches: ``caption``, ``images`` ``[B, C, H, W]`` winners
    (:class:`ImageDataModule`, e.g. ``from_pairs: true`` on a Pick-a-Pic file)."""

    validation_step = L.LightningModule.validation_step  # no validation: each step samples and draws a reference

    def __init__(
        self,
        model: Any,
        beta: float = 5000.0,
        criterion: str = "indicator",
        checkpoint_every: int = 30,
        max_checkpoints: int = 7,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, reference=True)
        self.record_hyperparameters()
        self.pool: list[dict[str, Tensor]] = [self._weights()]
        self._rng = random.Random(seed)

    def _weights(self) -> dict[str, Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.unet.state_dict().items()}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step % self.hparams.checkpoint_every == 0:
            self.pool.append(self._weights())
            if len(self.pool) > self.hparams.max_checkpoints:
                del self.pool[1]  # the starting weights stay, as in the paper's replay over all checkpoints

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        captions = batch["caption"]
        drawn = self._rng.randrange(len(self.pool))
        self.reference.load_state_dict(self.pool[drawn])
        seeds = [self._rng.randrange(2**31 - 1) for _ in captions]
        samples = self.model.sample(
            captions, seeds, self.hparams.num_inference_steps, self.hparams.guidance_scale, unet=self.reference
        )
        winners = self.model.encode_images(batch["images"])
        x0 = torch.cat([winners, self.model.encode_images(samples)])
        noise = torch.randn_like(winners).repeat(2, *([1] * (winners.dim() - 1)))
        t = self.model.random_timesteps(len(winners)).repeat(2)
        x_t, t, target = self.noised(x0, noise, t)
        text = self.model.encode_text(captions).repeat(2, 1, 1)
        err_w, err_s = denoising_error(self.model.predict(x_t, t, text), target).chunk(2)
        with torch.no_grad():
            ref_err_w, ref_err_s = denoising_error(self.model.predict(x_t, t, text, self.reference), target).chunk(2)
        loss = seppo_loss(err_w, ref_err_w, err_s, ref_err_s, self.hparams.beta, self.hparams.criterion).mean()
        return loss, {
            "sample_judged_loser": (ref_err_w > err_w).float().mean(),
            "reference_index": float(drawn),
            "pool_size": float(len(self.pool)),
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["seppo_pool"] = self.pool

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.pool = checkpoint.get("seppo_pool", self.pool)
