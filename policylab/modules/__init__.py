"""LightningModules, one file per method, grouped by family."""

from policylab.modules.base import RLModule
from policylab.modules.offline import TD3BC
from policylab.modules.online import SAC

__all__ = ["SAC", "TD3BC", "RLModule"]
