"""Judges of completions for online preference optimization: programmatic verifiers, scalar
reward models, pairwise preference models, and SPPO's win rates of ``K`` samples against each
other. One interface for all (:class:`ScalarJudge`, :class:`PairwiseJudge`); every judge checks
its output and counts its evaluations (``calls``) so that methods can be compared at an equal
judge budget."""

from policylab.judges.base import JudgeError, PairwiseJudge, ScalarJudge, win_rates
from policylab.judges.models import PreferenceModelJudge, RewardModelJudge, as_pairwise_judge
from policylab.judges.verifier import VerifierJudge

__all__ = [
    "as_pairwise_judge",
    "JudgeError",
    "PairwiseJudge",
    "PreferenceModelJudge",
    "RewardModelJudge",
    "ScalarJudge",
    "VerifierJudge",
    "win_rates",
]
