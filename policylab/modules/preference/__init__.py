"""Preference optimization of language models: SFT, the DPO family (one module, one loss
switch), and reward models (Bradley-Terry, the General Preference Model)."""

from policylab.modules.preference.dpo import DPO, LOSS_TYPES
from policylab.modules.preference.gpm import GeneralPreferenceModel
from policylab.modules.preference.reward_model import RewardModel
from policylab.modules.preference.sft import SFT

__all__ = ["DPO", "LOSS_TYPES", "SFT", "GeneralPreferenceModel", "RewardModel"]
