"""Callbacks: environment evaluation, online data collection, policy snapshots, rollout videos,
atomic checkpoints, the step progress bar, language and image evaluations, the judge budget of
online preference methods."""

from policylab.callbacks.checkpoint import AtomicCheckpoint, CheckpointWriteError
from policylab.callbacks.evaluation import EnvEvaluation
from policylab.callbacks.generation import GreedyAccuracy
from policylab.callbacks.images import ImageRewardEvaluation
from policylab.callbacks.interaction import EnvInteraction, StepRecording
from policylab.callbacks.judge_budget import JudgeBudget
from policylab.callbacks.progress import StepProgressBar
from policylab.callbacks.random_state import RandomState
from policylab.callbacks.snapshots import PolicySnapshots
from policylab.callbacks.video import RolloutVideo

__all__ = [
    "AtomicCheckpoint",
    "CheckpointWriteError",
    "EnvEvaluation",
    "EnvInteraction",
    "GreedyAccuracy",
    "ImageRewardEvaluation",
    "JudgeBudget",
    "PolicySnapshots",
    "RandomState",
    "RolloutVideo",
    "StepProgressBar",
    "StepRecording",
]
