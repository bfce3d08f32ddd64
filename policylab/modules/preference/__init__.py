"""Preference optimization of language models: the DPO family (one module, one loss switch)."""

from policylab.modules.preference.dpo import DPO, LOSS_TYPES

__all__ = ["DPO", "LOSS_TYPES"]
