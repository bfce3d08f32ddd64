"""Offline and offline-to-online RL methods, one file each."""

from policylab.modules.offline.a2pr import A2PR
from policylab.modules.offline.bc import BC
from policylab.modules.offline.cdsa import CDSA
from policylab.modules.offline.famo2o import FamO2O
from policylab.modules.offline.iql import IQL
from policylab.modules.offline.prdc import PRDC
from policylab.modules.offline.ro2o import RO2O
from policylab.modules.offline.td3bc import TD3BC

__all__ = ["A2PR", "BC", "CDSA", "IQL", "PRDC", "RO2O", "TD3BC", "FamO2O"]
