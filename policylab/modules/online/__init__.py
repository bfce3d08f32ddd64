"""Online RL methods, one file each (SAC builds policylab's offline datasets)."""

from policylab.modules.online.sac import SAC

__all__ = ["SAC"]
