"""Diffusion-DRO ("Diffusion Denoising Ranking Optimization", NeurIPS 2025, arXiv 2510.18353;
basiclab/DiffusionDRO): learning from expert images alone, with the model's own samples as the
negatives. A ranking hinge asks the model to denoise expert images better, relative to the
frozen reference, than states of its own sampling trajectories."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from policylab.losses.diffusion import denoising_error, diffusion_dro_loss
from policylab.modules.diffusion.base import DiffusionModule
from policylab.nn.target import frozen_copy


class DiffusionDRO(DiffusionModule):
    """Each step, a copy of the policy (re-synced every ``sync_every`` optimizer steps) samples one
    trajectory per caption of the batch (``num_inference_steps`` DDIM steps, guidance
    ``sampling_guidance``; the authors' 20 steps and 1.0) and keeps its states ``(x_t, t,
    eps_policy)`` as the replay buffer; each expert image is paired with one state of its own
    caption's trajectory at a random step. Both sides are scored as the model's denoising error
    minus the reference's (expert: fresh noise at the same ``t``; policy state: its own noise
    prediction as the target), and ``max(expert_diff - policy_diff + margin, 0)`` is minimized.
    Batches: ``caption``, ``images`` ``[B, C, H, W]`` expert images (:class:`ImageDataModule`).

    The authors re-sync every 16 forward/backward passes at 16 gradient-accumulation steps, that
    is, every optimizer step: ``sync_every=1``. Then the policy's error on the sampler's own
    states is at its minimum when the step is taken, so only the expert side moves the weights
    and the policy side sets where the hinge stops (training at ``sync_every=16`` optimizer
    steps pushes the model away from its own samples and collapses it, benchmarks/RESULTS.md)."""

    frozen_parts = (*DiffusionModule.frozen_parts, "sampler")
    validation_step = L.LightningModule.validation_step  # no validation: each step samples from the policy

    def __init__(
        self,
        model: Any,
        margin: float = 0.001,
        sync_every: int = 1,
        num_inference_steps: int = 20,
        sampling_guidance: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, lora, reference=True)
        self.record_hyperparameters()
        self.sampler = frozen_copy(self.model.unet).eval()

    @torch.no_grad()
    def online_negatives(self, captions: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """One state ``(x_t, t, prediction)`` per caption from the sampler's own trajectories (the
        sampler's output there is the policy-side target)."""
        if self.global_step % self.hparams.sync_every == 0:
            self.sampler.load_state_dict(self.model.unet.state_dict())
        seeds = torch.randint(0, 2**31 - 1, (len(captions),)).tolist()
        _, states = self.model.sample(
            captions,
            seeds,
            self.hparams.num_inference_steps,
            self.hparams.sampling_guidance,
            unet=self.sampler,
            trajectory=True,
        )
        pick = torch.randint(0, len(states), (len(captions),)).tolist()
        x_t = torch.stack([states[k][0][i] for i, k in enumerate(pick)])
        t = torch.stack([states[k][1][i] for i, k in enumerate(pick)])
        prediction = torch.stack([states[k][2][i] for i, k in enumerate(pick)])
        return x_t, t, prediction

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        captions = batch["caption"]
        x_policy, t, target_policy = self.online_negatives(captions)
        x_expert, _, target_expert = self.noised(self.model.encode_images(batch["images"]), t=t)
        text = self.model.encode_text(captions)
        inputs, targets = torch.cat([x_expert, x_policy]), torch.cat([target_expert, target_policy])
        steps, texts = torch.cat([t, t]), torch.cat([text, text])
        err = denoising_error(self.model.predict(inputs, steps, texts), targets)
        with torch.no_grad(), self.reference_unet() as reference:
            ref_err = denoising_error(self.model.predict(inputs, steps, texts, reference), targets)
        expert_diff, policy_diff = (err - ref_err).chunk(2)
        loss = diffusion_dro_loss(expert_diff, policy_diff, self.hparams.margin).mean()
        return loss, {
            "expert_diff": expert_diff.mean().detach(),
            "policy_diff": policy_diff.mean().detach(),
            "ranked": (expert_diff + self.hparams.margin < policy_diff).float().mean(),
        }
