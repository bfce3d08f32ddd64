"""Callbacks: environment evaluation and the step progress bar."""

from policylab.callbacks.evaluation import EnvEvaluation
from policylab.callbacks.progress import StepProgressBar

__all__ = ["EnvEvaluation", "StepProgressBar"]
