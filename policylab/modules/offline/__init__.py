"""Offline and offline-to-online RL methods, one file each."""

from policylab.modules.offline.td3bc import TD3BC

__all__ = ["TD3BC"]
