"""LightningModules, one file per method, grouped by family."""

from policylab.modules.base import RLModule
from policylab.modules.offline import A2PR, BC, IQL, PRDC, RO2O, TD3BC
from policylab.modules.online import SAC

__all__ = ["A2PR", "BC", "IQL", "PRDC", "RO2O", "SAC", "TD3BC", "RLModule"]
