"""Preference optimization of language models: SFT, the DPO family (one module, the loss
registry of :mod:`policylab.losses.pairwise`), reward models (Bradley-Terry, the General
Preference Model), HyPO and SRPO on offline pairs, and the online methods on the policy's own
judged samples (one loop, :class:`OnlineDPO`): online / iterative DPO, SPPO, RSO, INPO, APO,
EGPO, VPO, Nash-MD and XPO."""

from policylab.modules.preference.apo import APO
from policylab.modules.preference.dpo import DPO
from policylab.modules.preference.egpo import EGPO
from policylab.modules.preference.gpm import GeneralPreferenceModel
from policylab.modules.preference.hypo import HyPO, ReferenceKL
from policylab.modules.preference.inpo import INPO
from policylab.modules.preference.nash_md import NashMD
from policylab.modules.preference.objective import PairwiseObjective
from policylab.modules.preference.online_dpo import OnlineDPO
from policylab.modules.preference.reward_model import RewardModel
from policylab.modules.preference.rso import RSO
from policylab.modules.preference.sft import SFT
from policylab.modules.preference.sppo import SPPO
from policylab.modules.preference.srpo import SRPO, SelfRevisionAccuracy
from policylab.modules.preference.vpo import VPO
from policylab.modules.preference.xpo import XPO

__all__ = [
    "APO",
    "DPO",
    "EGPO",
    "INPO",
    "RSO",
    "SFT",
    "SPPO",
    "SRPO",
    "VPO",
    "XPO",
    "GeneralPreferenceModel",
    "HyPO",
    "NashMD",
    "OnlineDPO",
    "PairwiseObjective",
    "ReferenceKL",
    "RewardModel",
    "SelfRevisionAccuracy",
]
