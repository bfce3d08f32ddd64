"""SPPO: Self-Play Preference Optimization (Wu et al., 2024, "Self-Play Preference Optimization for
Language Model Alignment", arXiv:2405.00675; code uclaml/SPPO).

SPPO approximates the Nash equilibrium of the two-player constant-sum preference game by
multiplicative weights (Hedge) over iterations ``t`` (the paper's eq. 3.4 / Algorithm 1):

    pi_{t+1}(y | x)  ∝  pi_t(y | x) * exp(eta * P(y > pi_t | x)),

where ``P(y > pi_t | x) = E_{y' ~ pi_t}[P(y > y' | x)]`` is the probability that ``y`` beats the
current policy. Writing the normaliser's log as ``eta / 2`` (the value of ``P(pi_t > pi_t) = 1/2``)
turns the update into the square loss of the paper's eq. 3.6, regressed on samples of ``pi_t``:

    L(theta) = E_{y ~ pi_t} [ ( log pi_theta(y|x) / pi_t(y|x)  -  eta * (P(y > pi_t | x) - 1/2) )^2 ].

The practical algorithm (the paper's Algorithm 1 and the authors' pipeline, checked in
``scripts/compute_prob.py`` and ``scripts/update_dataset.py``): per prompt, ``K`` samples from
``pi_t`` (K = 5); the ``K x K`` preference matrix of a pairwise judge (PairRM there: ``sigma(s_i - s_j)``);
each sample's win rate ``P_hat(y_k > pi_t) = (1/K) sum_j P(y_k > y_j)`` (self-comparison 1/2
included: :func:`policylab.judges.win_rates` with ``include_self=True``); the highest and the lowest
win-rate samples kept as ``(y_w, y_l)`` with their own win rates; the loss is the sum of the two
squared terms (the ``"sppo"`` entry of :data:`policylab.losses.pairwise.PAIRWISE_LOSSES`, with
``beta = 1 / eta``; the authors' default ``beta = 0.001``, i.e. ``eta = 1000``); the reference is the
previous iterate ``pi_t``, replaced by the policy at the start of every iteration.

Here :class:`SPPO` is :class:`~policylab.modules.preference.OnlineDPO` with: a pairwise judge
(a :class:`~policylab.judges.PairwiseJudge`; a scalar judge or a check's dotted path is wrapped as
Bradley-Terry ``sigma(r_a - r_b)``, :class:`~policylab.judges.PreferenceModelJudge`), the win rates as
the samples' scores, best-vs-worst pairs, the win rates stored with each pair
(``chosen_win_rate``, ``rejected_win_rate``) for the loss, and ``reference_update:
previous_iterate``. An iteration (``generate_every_n_steps`` steps) plays the role of one of the
authors' iterations; the authors train one epoch per iteration over 20k prompts, which here is
``prompts_per_iteration`` prompts and as many steps as set.

Differences, documented: a prompt whose ``K`` win rates are all equal (every sample judged the
same) gives no pair and is counted in ``online/dropped_ties`` (the authors' code keeps sample 0
against sample 0); ``online/score`` logs the mean win rate, which is 1/2 by construction with an
antisymmetric judge (``online/win_rate_spread`` logs the mean max-minus-min win rate instead);
``online/kl`` is 0 by construction (the reference ``pi_t`` is the policy that sampled).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.callbacks.evaluation import log_evaluation
from policylab.judges import win_rates
from policylab.modules.preference.online_dpo import OnlineDPO


class SPPO(OnlineDPO):
    """Self-Play Preference Optimization on the policy's own samples (see the module docstring).

    Args:
        model: the SFT model (name, path or model).
        judge: a :class:`~policylab.judges.PairwiseJudge` (a GPM folder through
            :class:`~policylab.judges.PreferenceModelJudge`), or a scalar judge / a check's dotted
            path, used as Bradley-Terry ``P(a > b) = sigma(r_a - r_b)``.
        beta: ``1 / eta`` of the Hedge update (the authors' 0.001).
        num_generations: K samples per prompt (the authors' 5).
        include_self: win rates as the authors' ``compute_prob.py`` (self-comparison 1/2 in the
            mean over K); False: the mean over the K - 1 others.
        loss_type: ``sppo`` (the regression above); another registry entry trains on the same
            best/worst pairs (e.g. ``sigmoid``: iterative DPO with a pairwise judge).
        reference_update: ``previous_iterate`` (SPPO's pi_t); ``fixed`` / ``ema`` for ablations.
        temperature, top_p: the authors' vLLM sampling (0.7, 0.9).
        kwargs: the other sampling, iteration and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO` (the authors' lr is its 5e-7).
    """

    judge_kind = "pairwise"  # a scalar judge or a check is used as Bradley-Terry

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        beta: float = 0.001,
        num_generations: int = 5,
        include_self: bool = True,
        loss_type: str = "sppo",
        temperature: float = 0.7,
        top_p: float = 0.9,
        reference_update: str = "previous_iterate",
        **kwargs: Any,
    ) -> None:
        if beta <= 0:
            raise ValueError(f"beta (1/eta of SPPO) must be > 0, got {beta}")
        super().__init__(
            model,
            judge=judge,
            loss_type=loss_type,
            beta=beta,
            num_generations=num_generations,
            pair_rule="best_vs_worst",
            temperature=temperature,
            top_p=top_p,
            reference_update=reference_update,
            **kwargs,
        )

    def score_completions(self, completions) -> Tensor:
        """Each row's win rate ``P_hat(y_k > pi_t)`` against the K samples of its prompt, ``[N*K]``."""
        k = self.hparams.num_generations
        texts = list(completions.texts)
        groups = [texts[i * k : (i + 1) * k] for i in range(len(completions.prompts))]
        rates = win_rates(self.judge, list(completions.prompts), groups, include_self=self.hparams.include_self)
        rates = rates.float().cpu()
        self._spread = float((rates.max(1).values - rates.min(1).values).mean())
        return rates.reshape(-1)

    def extra_pair_fields(self, scores: Tensor, pairs) -> dict[str, Tensor]:
        """The win rates of each pair's chosen and rejected sample, the targets of the ``sppo`` loss."""
        return {"chosen_win_rate": scores[pairs.chosen], "rejected_win_rate": scores[pairs.rejected]}

    def run_iteration(self, data, iteration: int) -> None:
        super().run_iteration(data, iteration)
        spread = torch.tensor(self._spread, dtype=torch.float64, device=self.device)
        if self.trainer.world_size > 1:
            spread = self.trainer.strategy.reduce(spread, reduce_op="mean")
        self.last_iteration_metrics["online/win_rate_spread"] = float(spread)
        if self._logs_iteration(iteration):
            log_evaluation(self.trainer, self, {"online/win_rate_spread": float(spread)})
