"""LightningModules, one file per method, grouped by family."""

from policylab.modules.base import RLModule
from policylab.modules.offline import A2PR, BC, CDSA, IQL, PRDC, RO2O, TD3BC, FamO2O
from policylab.modules.online import SAC

__all__ = ["A2PR", "BC", "CDSA", "IQL", "PRDC", "RO2O", "SAC", "TD3BC", "FamO2O", "RLModule"]
