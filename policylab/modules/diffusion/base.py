"""What the diffusion modules share: loading a text-to-image model, optional LoRA on the UNet, a
frozen reference, and a copy of the trained model in diffusers' folder layout next to the
checkpoints (``<run>/pipeline``), which a later stage or diffusers loads by path (the optimizer,
frozen parts in eval mode and logging are :class:`PretrainedModule`'s)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from policylab.modules.hub import pretrained_source, quiet_progress_bars
from policylab.modules.pretrained import PretrainedModule, import_peft
from policylab.nn.target import frozen_copy
from policylab.nn.text_to_image import TextToImage

#: the UNet layers LoRA adapts by default: attention projections, as the diffusers LoRA examples do
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def load_text_to_image(model: Any) -> TextToImage:
    """A pipeline folder path, or a :class:`TextToImage` as it is. A folder that does not exist
    stops with a FileNotFoundError that names it."""
    if isinstance(model, (str, Path)):
        return TextToImage.from_pretrained(pretrained_source(model, "pipeline"))
    if not isinstance(model, TextToImage):
        raise TypeError(f"model must be a pipeline folder path or a TextToImage, got {type(model).__name__}")
    return model


class DiffusionModule(PretrainedModule):
    """Base of the diffusion modules: ``self.model`` is the :class:`TextToImage` whose UNet
    trains (text encoder and VAE frozen). ``reference=True`` keeps a frozen copy of the starting
    UNet as ``self.reference`` (or, with ``lora``, uses the UNet with its adapters disabled, so
    no copy is made). ``lora``: ``peft.LoraConfig`` arguments (``target_modules`` defaults to the
    attention projections); only the adapters train. Subclasses record ``lr`` and
    ``weight_decay`` as hyperparameters. Batches hold a ``caption`` list (:meth:`batch_size`)."""

    frozen_parts = ("model.text_encoder", "model.vae", "reference")
    export_folder = "pipeline"

    def __init__(self, model: Any, lora: dict[str, Any] | None = None, reference: bool = False) -> None:
        super().__init__()
        self.model = load_text_to_image(model)
        self.model.unet.train()
        if lora is not None:
            peft = import_peft()
            self.model.unet.requires_grad_(False)
            self.model.unet.add_adapter(peft.LoraConfig(**{"target_modules": list(UNET_LORA_TARGETS), **lora}))
        self.reference = None
        if reference and lora is None:
            self.reference = frozen_copy(self.model.unet).eval()

    @property
    def uses_lora(self) -> bool:
        return getattr(self.model.unet, "_hf_peft_config_loaded", False)

    @contextlib.contextmanager
    def reference_unet(self):
        """The reference UNet inside the block: the frozen copy, or the UNet with its LoRA
        adapters disabled."""
        if self.reference is not None:
            yield self.reference
            return
        if not self.uses_lora:
            raise RuntimeError(f"{type(self).__name__} was built without a reference (reference=False and no lora)")
        self.model.unet.disable_adapters()
        try:
            yield self.model.unet
        finally:
            self.model.unet.enable_adapters()

    def batch_size(self, batch: dict) -> int:
        return len(batch["caption"])

    # --- what the training steps share -----------------------------------------------------
    def noised(self, x0: Tensor, noise: Tensor | None = None, t: Tensor | None = None):
        """``(x_t, t, target)`` for clean ``x0`` with fresh (or given) noise and timesteps."""
        noise = torch.randn_like(x0) if noise is None else noise
        t = self.model.random_timesteps(len(x0)) if t is None else t
        return self.model.add_noise(x0, noise, t), t, self.model.target(x0, noise, t)

    def sample(
        self, captions: list[str], seed: int | list[int] = 0, num_inference_steps: int = 20, guidance_scale: float = 3.0
    ) -> Tensor:
        """Images of the current model (what evaluation scores; Self-NPO overrides it to guide
        with its negative model)."""
        return self.model.sample(captions, seed, num_inference_steps, guidance_scale)

    def export(self, folder: Path, checkpoint: dict) -> None:
        unet, unet_state = self.model.unet, self.checkpoint_weights(checkpoint, "model.unet.")
        if self.uses_lora:  # write a plain UNet with the adapters merged in
            unet = copy.deepcopy(unet)
            unet.load_state_dict(unet_state)
            unet.fuse_lora()
            unet.unload_lora()
            unet_state = None
        with quiet_progress_bars():
            TextToImage(
                unet, self.model.text_encoder, self.model.tokenizer, self.model.scheduler, self.model.vae
            ).save_pretrained(folder, unet_state=unet_state)
