"""INPO: Iterative Nash Policy Optimization (Zhang et al., ICLR 2025, "Iterative Nash Policy
Optimization: Aligning LLMs with General Preferences via No-Regret Learning", arXiv:2407.00617).

INPO looks for the Nash policy of the KL-regularized two-player preference game by letting the
policy play against itself with a no-regret learner, online mirror descent (OMD). Iteration ``t``
targets

    pi_{t+1}(y | x)  ∝  pi_t(y | x)^(1 - tau/eta) * pi_ref(y | x)^(tau/eta) * exp(P(y > pi_t | x) / eta),

and reaches it without estimating any win rate ``P(y > pi_t)``: the target is the minimiser of
``E[(h_t(pi, y_w, y_l) - 1/(2 eta))^2]`` over pairs sampled from ``pi_t`` and labelled by the judge,
``h_t = log pi(y_w)/pi(y_l) - (tau/eta) log pi_ref(y_w)/pi_ref(y_l) - (1 - tau/eta) log pi_t(y_w)/pi_t(y_l)``
(the ``"inpo"`` entry of :data:`policylab.losses.pairwise.PAIRWISE_LOSSES`, math in
:mod:`policylab.losses.inpo`). ``eta`` is OMD's inverse step size (with the step size
``eta' = 1/eta`` the target reads ``pi_t^(1 - eta' tau) pi_ref^(eta' tau) exp(eta' P)``).

Here :class:`INPO` is :class:`~policylab.modules.preference.OnlineDPO` with two anchors: the fixed
reference ``pi_ref`` (the SFT model: the frozen ``reference`` copy, ``reference_update: fixed``) and
the previous iterate ``pi_t``, the policy at the start of the running iteration, which sampled the
iteration's answers. ``pi_t`` enters the loss only through its log-probs of the iteration's pairs:
they are computed once, right after the pairs are built and before the iteration's first step
(as the paper's pipeline precomputes them), and stored with the pairs in the datamodule
(``chosen_iterate_logp``, ``rejected_iterate_logp``), so a checkpoint holds both anchors (the
reference in the weights, ``pi_t`` with the pairs) and a run resumed inside an iteration trains on
the same targets. Pairs: ``num_generations`` samples per prompt, best against worst by the judge's
score (a scalar judge; a verifier or a reward model).

Paper values (not read in the paper itself here: taken from public re-implementations of its
Algorithm 1; see the configs' header): ``eta = 0.0075`` and ``tau = eta / 3``, 3 iterations of the
RLHFlow iterative pipeline on LLaMA-3-8B-SFT, 8 samples per prompt with best/worst pairs.
``beta`` plays the role of ``eta`` (``1/(2 beta)`` is the target margin, as IPO's), so the module's
other settings (sampling, iterations, optimizer) are OnlineDPO's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.callbacks.evaluation import log_evaluation
from policylab.modules.preference.online_dpo import OnlineDPO

#: the per-pair fields that carry ``log pi_t`` of the chosen and rejected answers
ITERATE_FIELDS = ("chosen_iterate_logp", "rejected_iterate_logp")


class INPO(OnlineDPO):
    """Iterative Nash Policy Optimization on the policy's own judged samples (see the module docstring).

    Args:
        model: the SFT model (name, path or model): the policy's start and the fixed reference.
        judge: a scalar judge (a verifier, a reward model) or a check's dotted path.
        beta: the paper's ``eta``, OMD's inverse step size (0.0075): the target margin is ``1/(2 beta)``.
        tau: the paper's ``tau``, the KL strength toward the reference (``beta / 3`` = 0.0025);
            ``0 <= tau <= beta``, and ``tau / beta`` is the reference's weight in ``h_t``.
        num_generations: samples per prompt (8), paired best against worst.
        kwargs: the other sampling, iteration and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO` (``generate_every_n_steps`` is the
            length of an iteration ``t``).
    """

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        beta: float = 0.0075,
        tau: float = 0.0025,
        num_generations: int = 8,
        pair_rule: str = "best_vs_worst",
        **kwargs: Any,
    ) -> None:
        if beta <= 0 or not 0.0 <= tau <= beta:
            raise ValueError(f"INPO needs beta (the paper's eta) > 0 and 0 <= tau <= beta, got beta={beta}, tau={tau}")
        super().__init__(
            model,
            judge=judge,
            loss_type="inpo",
            beta=beta,
            loss_kwargs={"tau": tau},
            num_generations=num_generations,
            pair_rule=pair_rule,
            reference_update="fixed",
            **kwargs,
        )

    @torch.no_grad()
    def iterate_log_probs(self, pairs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``log pi_t`` (the policy now, in eval mode) of every stored pair's chosen and rejected
        answer, ``[M]`` each, on the CPU."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            out = {}
            for side, name in zip(("chosen", "rejected"), ITERATE_FIELDS):
                rows = {k: pairs[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "completion_mask")}
                chunks = [
                    self._log_probs(self.policy, {k: v.to(self.device) for k, v in chunk.items()})[0]
                    for chunk in self._chunks(rows)
                ]
                out[name] = torch.cat(chunks).float().cpu() if chunks else torch.zeros(0)
            return out
        finally:
            self.policy.train(was_training)

    def run_iteration(self, data, iteration: int) -> None:
        """OnlineDPO's iteration (sample from ``pi_t``, judge, pair, store), then ``log pi_t`` of
        the stored pairs added to them before any training step of the iteration."""
        super().run_iteration(data, iteration)
        if data.num_pairs:
            data.store_iteration(iteration, {**data.pairs, **self.iterate_log_probs(data.pairs)})
        if self._logs_iteration(iteration) and data.num_pairs:
            # h_t at the iteration's start (the policy is pi_t): the reference term alone.
            gap = (data.pairs["chosen_iterate_logp"] - data.pairs["rejected_iterate_logp"]).mean()
            log_evaluation(self.trainer, self, {"online/iterate_margin": float(gap)})
