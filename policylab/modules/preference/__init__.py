"""Preference optimization of language models: SFT, and the DPO family (one module, one loss switch)."""

from policylab.modules.preference.dpo import DPO, LOSS_TYPES
from policylab.modules.preference.sft import SFT

__all__ = ["DPO", "LOSS_TYPES", "SFT"]
