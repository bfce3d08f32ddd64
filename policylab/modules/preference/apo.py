"""APO: Accelerated Preference Optimization (He, Yuan and Gu, 2024, "Accelerated Preference
Optimization for Large Language Model Alignment", arXiv:2410.06293).

Iterative DPO is a proximal point method: iteration ``t`` fits ``pi_{t+1}`` by DPO on pairs sampled
from ``pi_hat_t``, with ``pi_hat_t`` as the reference (the KL anchor of the proximal step). APO
accelerates it with Nesterov's momentum across iterations: the next reference and sampler is the
extrapolation ``pi_hat_{t+1} ∝ pi_{t+1} (pi_{t+1} / pi_t)^alpha`` of the last two iterates
(``alpha = 0``: iterative DPO). (Not the anchored preference optimization of the ``apo_zero`` loss.)

Here :class:`APO` is :class:`~policylab.modules.preference.OnlineDPO` (``generate_every_n_steps``
steps per iteration, best-vs-worst pairs of the judge's scores, the ``sigmoid`` DPO loss) whose
reference rule is the extrapolation, taken on the weights
(:func:`policylab.losses.apo.nesterov_extrapolation`): at the start of iteration ``t`` the policy's
weights ``theta_t`` (the result of iteration ``t - 1``) and those of the iterate before,
``theta_{t-1}`` (the frozen ``previous`` copy), give ``theta_hat_t = theta_t + alpha (theta_t -
theta_{t-1})``; the reference and the policy both become ``theta_hat_t`` (Nesterov's next proximal
step starts at the look-ahead point, as iterative DPO starts each iteration from its reference),
``previous`` becomes ``theta_t``, and the iteration samples from ``theta_hat_t``. Iteration 0 has
no earlier iterate: ``previous`` starts as the SFT model, so the step is the identity and APO's
first iteration is iterative DPO's. ``previous`` and ``reference`` are submodules, so checkpoints
hold them: a resumed run extrapolates from the same two iterates.

What was not read in the paper here (its text was out of reach of this session): whether the
authors extrapolate the weights or the log-probabilities in the loss (the latter is exact for the
DPO loss, whose pairwise log-ratios cancel the normaliser, but gives no model to sample from);
the weights are extrapolated here. Defaults: ``alpha = 0.3``, DPO's ``beta = 0.1`` and the Snorkel
recipe's 5 samples per prompt with best/worst pairs (PairRM there) are this project's reading of
the paper's setup, not verified against its text.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from policylab.callbacks.evaluation import log_evaluation
from policylab.losses.apo import nesterov_extrapolation
from policylab.modules.preference.online_dpo import OnlineDPO


class APO(OnlineDPO):
    """Iterative DPO with Nesterov extrapolation of the iterates (see the module docstring).

    Args:
        model: the SFT model (name, path or model).
        judge: a scalar judge (a verifier, a reward model) or a check's dotted path.
        alpha: the extrapolation (momentum) coefficient, ``>= 0`` (0.3; 0: iterative DPO).
        beta: DPO's beta (0.1).
        num_generations: samples per prompt (5), paired best against worst.
        kwargs: the other loss, sampling, iteration and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO` (``generate_every_n_steps`` is the
            length of an iteration; ``loss_type`` another pairwise loss of the registry).
    """

    frozen_parts = ("reference", "previous")

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        alpha: float = 0.3,
        beta: float = 0.1,
        num_generations: int = 5,
        pair_rule: str = "best_vs_worst",
        **kwargs: Any,
    ) -> None:
        if alpha < 0:
            raise ValueError(f"APO's alpha (the extrapolation coefficient) must be >= 0, got {alpha}")
        super().__init__(
            model,
            judge=judge,
            beta=beta,
            num_generations=num_generations,
            pair_rule=pair_rule,
            reference_update="previous_iterate",  # a full reference copy (no LoRA), moved by update_reference
            **kwargs,
        )
        if not self.needs_reference:
            raise ValueError(f"APO extrapolates the reference: loss_type {self.settings.loss_type!r} has none")
        self.alpha = alpha
        #: theta_{t-1}: the policy's weights at the start of the running iteration, before extrapolation
        self.previous = copy.deepcopy(self.policy).requires_grad_(False).eval()

    @torch.no_grad()
    def update_reference(self, rule: str | None = None) -> None:
        """Nesterov's step at an iteration's start: ``theta_hat = theta + alpha (theta - previous)``
        becomes the policy and the reference, ``theta`` the new ``previous``."""
        policy = dict(self.policy.named_parameters())
        policy.update(dict(self.policy.named_buffers()))
        previous = dict(self.previous.named_parameters())
        previous.update(dict(self.previous.named_buffers()))
        step = torch.zeros((), dtype=torch.float64)
        for name, ref in [*self.reference.named_parameters(), *self.reference.named_buffers()]:
            if not ref.is_floating_point():
                continue
            current, before = policy[name], previous[name]
            ahead = nesterov_extrapolation(current.detach().float(), before.float(), self.alpha)
            step += (current.detach().float() - before.float()).square().sum().cpu().double()
            before.copy_(current.detach())
            ref.copy_(ahead)
            current.data.copy_(ahead)
        self._iterate_step = float(step.sqrt())

    def run_iteration(self, data, iteration: int) -> None:
        super().run_iteration(data, iteration)
        # ||theta_t - theta_{t-1}||: the size of the last iteration's move, which alpha extrapolates.
        if self._logs_iteration(iteration):
            log_evaluation(self.trainer, self, {"online/iterate_step": self._iterate_step})
