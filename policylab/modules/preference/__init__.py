"""Preference optimization of language models: SFT, the DPO family (one module, the loss
registry of :mod:`policylab.losses.pairwise`), and reward models (Bradley-Terry, the General
Preference Model), online DPO on the policy's own judged samples, and SPPO and RSO on the same loop."""

from policylab.modules.preference.dpo import DPO
from policylab.modules.preference.gpm import GeneralPreferenceModel
from policylab.modules.preference.objective import PairwiseObjective
from policylab.modules.preference.online_dpo import OnlineDPO
from policylab.modules.preference.reward_model import RewardModel
from policylab.modules.preference.rso import RSO
from policylab.modules.preference.sft import SFT
from policylab.modules.preference.sppo import SPPO

__all__ = ["DPO", "SFT", "GeneralPreferenceModel", "OnlineDPO", "PairwiseObjective", "RSO", "RewardModel", "SPPO"]
