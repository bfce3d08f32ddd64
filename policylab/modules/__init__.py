"""LightningModules, one file per method, grouped by family."""

from policylab.modules.base import RLModule
from policylab.modules.offline import A2PR, IQL, TD3BC
from policylab.modules.online import SAC

__all__ = ["A2PR", "IQL", "SAC", "TD3BC", "RLModule"]
