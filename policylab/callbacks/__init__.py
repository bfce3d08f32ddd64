"""Callbacks: environment evaluation, online data collection, policy snapshots, rollout videos,
atomic checkpoints, the step progress bar, language and image evaluations."""

from policylab.callbacks.checkpoint import AtomicCheckpoint, CheckpointWriteError
from policylab.callbacks.evaluation import EnvEvaluation
from policylab.callbacks.generation import GreedyAccuracy
from policylab.callbacks.images import ImageRewardEvaluation
from policylab.callbacks.interaction import EnvInteraction, StepRecording
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
    "PolicySnapshots",
    "RandomState",
    "RolloutVideo",
    "StepProgressBar",
    "StepRecording",
]
