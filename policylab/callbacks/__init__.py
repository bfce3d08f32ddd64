"""Callbacks: environment evaluation, online data collection and the step progress bar."""

from policylab.callbacks.evaluation import EnvEvaluation
from policylab.callbacks.interaction import EnvInteraction, StepRecording
from policylab.callbacks.progress import StepProgressBar
from policylab.callbacks.snapshots import PolicySnapshots

__all__ = ["EnvEvaluation", "EnvInteraction", "PolicySnapshots", "StepProgressBar", "StepRecording"]
