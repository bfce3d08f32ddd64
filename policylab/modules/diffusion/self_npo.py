"""Self-NPO (arXiv 2505.11777, "Self-NPO: Negative Preference Optimization of Diffusion Models by
Simply Learning from Itself", 2025): a negative model learned without preference labels, by
truncated diffusion fine-tuning on the model's own unconditional predictions; at sampling it
replaces the unconditional branch of classifier-free guidance."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from policylab.losses.diffusion import pseudo_huber
from policylab.modules.diffusion.base import DiffusionModule
from policylab.nn.target import frozen_copy, polyak_update


class SelfNPO(DiffusionModule):
    """The trained UNet is the negative model; ``self.reference`` keeps the starting (positive)
    UNet, and a teacher follows the trained one as an EMA (``ema``, 0.999).

    Per image: ``t`` from a ``grid_steps``-point DDIM grid, ``x_t`` forward-noised; the teacher
    runs ``teacher_steps`` unconditional DDIM steps (guidance -1) to ``s = t - teacher_steps *
    stride`` and its clean estimate at ``s`` is the target; ``x_s`` is re-noised to a random
    ``u`` in ``(s, T)``, and the caption-conditioned student's clean estimate there is regressed
    on the target with the pseudo-Huber loss (``c`` 0.001). ``max_renoise_step`` caps ``u``
    (default: the schedule's last step, as the authors): a clean estimate at ``u`` carries the
    UNet's error times ``sigma_u / alpha_u``, which is 14.6 at SD's last step but 20000 at the
    last step of diffusers' capped cosine schedule; capping ``u`` where the ratio is SD's (step
    950 there) keeps the loss from being all high-noise samples. The authors' grid is 25 steps
    and 5 teacher steps. :meth:`sample` guides the positive model with the negative one:
    ``eps = eps_neg(x, empty) + w (eps_pos(x, c) - eps_neg(x, empty))``. Batches: ``caption``,
    ``images`` ``[B, C, H, W]`` (:class:`ImageDataModule`; no labels needed)."""

    frozen_parts = (*DiffusionModule.frozen_parts, "teacher")
    validation_step = L.LightningModule.validation_step  # no validation: the loss is a distillation of its own EMA

    def __init__(
        self,
        model: Any,
        ema: float = 0.999,
        grid_steps: int = 25,
        teacher_steps: int = 5,
        huber_c: float = 0.001,
        lr: float = 1e-6,
        weight_decay: float = 1e-3,
        max_renoise_step: int | None = None,
    ) -> None:
        super().__init__(model, reference=True)
        self.record_hyperparameters()
        self.teacher = frozen_copy(self.model.unet).eval()
        total = len(self.model.alphas_cumprod)
        self.grid_stride = total // grid_steps  # timesteps between points of the DDIM grid
        highest_teacher_stop = max((grid_steps - teacher_steps) * self.grid_stride - 1, 0)
        if max_renoise_step is not None and not highest_teacher_stop < max_renoise_step:
            raise ValueError(
                f"max_renoise_step must exceed the teacher's highest stopping step, {highest_teacher_stop} "
                f"(grid_steps {grid_steps}, teacher_steps {teacher_steps}); got {max_renoise_step}"
            )
        self.last_renoise_step = total - 1 if max_renoise_step is None else min(max_renoise_step, total - 1)

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = self.model.encode_images(batch["images"])
        n, stride = len(x0), self.grid_stride
        t = (torch.randint(0, self.hparams.grid_steps, (n,), device=x0.device) + 1) * stride - 1
        x_t = self.model.add_noise(x0, torch.randn_like(x0), t)
        with torch.no_grad():
            empty = self.model.encode_text([""] * n)
            x_s, s = x_t, t
            for _ in range(self.hparams.teacher_steps):  # unconditional DDIM steps of the teacher
                nxt = (s - stride).clamp(min=0)
                prediction = self.model.predict(x_s, s, empty, self.teacher)
                clean, noise = (
                    self.model.clean_estimate(x_s, s, prediction),
                    self.model.noise_estimate(x_s, s, prediction),
                )
                x_s, s = self.model.add_noise(clean, noise, nxt), nxt
            target = self.model.clean_estimate(x_s, s, self.model.predict(x_s, s, empty, self.teacher))
            u = s + 1 + (torch.rand(n, device=x0.device) * (self.last_renoise_step - s)).long()
            x_u = self.renoise(x_s, s, u)
        student = self.model.clean_estimate(
            x_u, u, self.model.predict(x_u, u, self.model.encode_text(batch["caption"]))
        )
        return pseudo_huber(student - target, self.hparams.huber_c).mean(), {}

    def renoise(self, x_s: Tensor, s: Tensor, u: Tensor) -> Tensor:
        """``x_u`` from ``x_s`` by the forward process between the two times:
        ``alpha_u (x_s / alpha_s + sqrt(sigma_u^2/alpha_u^2 - sigma_s^2/alpha_s^2) z)``."""
        shape = (-1, *([1] * (x_s.dim() - 1)))
        abar_s, abar_u = self.model.alphas_cumprod[s].view(shape), self.model.alphas_cumprod[u].view(shape)
        spread = ((1 - abar_u) / abar_u - (1 - abar_s) / abar_s).clamp(min=0).sqrt()
        return abar_u.sqrt() * (x_s / abar_s.sqrt() + spread * torch.randn_like(x_s))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        polyak_update(self.teacher, self.model.unet, 1 - self.hparams.ema)

    def sample(
        self, captions: list[str], seed: int | list[int] = 0, num_inference_steps: int = 20, guidance_scale: float = 3.0
    ) -> Tensor:
        return self.model.sample(
            captions, seed, num_inference_steps, guidance_scale, unet=self.reference, negative_unet=self.model.unet
        )
