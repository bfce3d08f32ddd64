"""Preference alignment of text-to-image diffusion models (diffusers UNets): denoising
pretraining/SFT, Diffusion-DPO, SmPO, SePPO, Self-NPO and Diffusion-DRO."""

from policylab.modules.diffusion.diffusion_dpo import DiffusionDPO
from policylab.modules.diffusion.dro import DiffusionDRO
from policylab.modules.diffusion.self_npo import SelfNPO
from policylab.modules.diffusion.seppo import SePPO
from policylab.modules.diffusion.sft import DiffusionSFT
from policylab.modules.diffusion.smpo import SmPO

__all__ = ["DiffusionDPO", "DiffusionDRO", "DiffusionSFT", "SePPO", "SelfNPO", "SmPO"]
