"""torchmetrics metrics of policylab's methods."""

from policylab.metrics.images import CLIPScore
from policylab.metrics.preference import (
    IdealizedRankingAccuracy,
    RankingAccuracy,
    RewardAccuracy,
    WinRate,
)

__all__ = ["CLIPScore", "IdealizedRankingAccuracy", "RankingAccuracy", "RewardAccuracy", "WinRate"]
