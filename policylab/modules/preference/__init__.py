"""Preference optimization of language models: SFT, the DPO family (one module, the loss
registry of :mod:`policylab.losses.pairwise`), and reward models (Bradley-Terry, the General
Preference Model), and online DPO on the policy's own judged samples."""

from policylab.modules.preference.dpo import DPO
from policylab.modules.preference.gpm import GeneralPreferenceModel
from policylab.modules.preference.objective import PairwiseObjective
from policylab.modules.preference.online_dpo import OnlineDPO
from policylab.modules.preference.reward_model import RewardModel
from policylab.modules.preference.sft import SFT

__all__ = ["DPO", "SFT", "GeneralPreferenceModel", "OnlineDPO", "PairwiseObjective", "RewardModel"]
