"""torchmetrics metrics of policylab's methods."""

from policylab.metrics.preference import (
    IdealizedRankingAccuracy,
    RankingAccuracy,
    RewardAccuracy,
    WinRate,
)

__all__ = ["IdealizedRankingAccuracy", "RankingAccuracy", "RewardAccuracy", "WinRate"]
