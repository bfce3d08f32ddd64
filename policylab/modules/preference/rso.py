"""RSO: Statistical Rejection Sampling Optimization (Liu et al., ICLR 2024, "Statistical Rejection
Sampling Improves Preference Optimization", arXiv:2309.06657).

DPO and SLiC fit the optimal policy of the KL-regularised reward objective,

    pi*(y | x) = pi_sft(y | x) * exp(r(x, y) / beta) / Z(x)          (the paper's eq. 4),

but train on pairs sampled from ``pi_sft`` (or another policy), not from ``pi*``. RSO draws the
pairs from ``pi*`` itself by rejection sampling from ``pi_sft``: with the proposal ``pi_sft`` and the
bound ``M = exp((r_max - log Z) / beta)``, a candidate ``y ~ pi_sft`` is accepted with probability
``pi*(y) / (M pi_sft(y)) = exp((r(x, y) - r_max) / beta)``, where ``r_max`` is the largest reward of
the candidates (the paper's Algorithm 1: ``N`` candidates from ``pi_sft`` (64), scored by the reward
model, accepted until ``k`` (8) are, with ``r_max`` the largest reward of the candidates still
left, so that every pass accepts at least one). The accepted responses are paired (random pairs,
or a tournament), labelled by the reward model, and trained on with the ``sigmoid-norm`` loss (DPO:
``-log sigma(gamma [log pi(y_w)/pi_sft(y_w) - log pi(y_l)/pi_sft(y_l)])``, "norm" meaning normalised
by ``pi_sft``) or ``hinge-norm`` (SLiC's ``max(0, 1 - gamma [...])``): registry entries ``sigmoid``
and ``hinge``.

Here :func:`statistical_rejection_sampling` is Algorithm 1 as a pure function, and :class:`RSO` is
the :class:`~policylab.modules.preference.OnlineDPO` loop with the candidates sampled from the
reference (the SFT model, ``reference_update: fixed``), scored by a scalar judge (a reward model or
the task's verifier), rejection-sampled and paired. The sampling ``beta`` (``sampling_beta``,
the paper's recommended 0.5 for its reward scale) is separate from the loss's ``beta`` (the
paper's ``gamma``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.datamodules.online import PAIR_RULES, Pairs, build_pairs
from policylab.modules.preference.online_dpo import OnlineDPO

#: how the accepted responses of a prompt are paired
RSO_PAIRINGS = ("disjoint", *PAIR_RULES)


def statistical_rejection_sampling(
    rewards: Tensor, num_accepted: int, beta: float, generator: torch.Generator | None = None
) -> Tensor:
    """Indices ``[N, num_accepted]`` of the candidates accepted for each of ``N`` prompts, in the
    order they were accepted, by the statistical rejection sampling of RSO (Algorithm 1 of Liu et
    al., 2024) toward ``pi*(y) ∝ pi_sft(y) exp(r(y) / beta)`` when the ``M`` candidates (the columns
    of ``rewards [N, M]``) are independent draws of ``pi_sft``.

    Per prompt, in passes until ``num_accepted`` are accepted: ``r_max`` is the largest reward of
    the candidates not yet accepted; each of them, visited in a random order, is accepted with
    probability ``exp((r - r_max) / beta)`` (drawing ``u ~ U(0, 1)``, accepted when
    ``u < exp(...)``) and removed from the pool, the pass stopping once ``num_accepted`` are.
    A pass always accepts the best remaining candidate, so the loop ends. As ``beta -> 0`` the
    result is the top-``num_accepted`` rewards, best first (ties in random order); as
    ``beta -> inf`` every candidate is accepted on the first visit, so the result is a uniform
    random subset. When the first pass fills the quota (``num_accepted`` much smaller than the
    expected number of acceptances) the accepted ones are exact independent draws of ``pi*``.

    ``generator`` seeds the visiting order and ``u``; non-finite rewards, ``beta <= 0`` or more
    accepted than candidates stop with a message.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rejection sampling needs rewards of shape [prompts, candidates], got {tuple(rewards.shape)}")
    n, m = rewards.shape
    if not 1 <= num_accepted <= m:
        raise ValueError(f"num_accepted must lie in [1, {m}] (the candidates per prompt), got {num_accepted}")
    if not beta > 0:
        raise ValueError(f"the rejection-sampling beta must be > 0, got {beta}")
    bad = (~torch.isfinite(rewards)).nonzero()
    if len(bad):
        i, j = bad[0].tolist()
        raise ValueError(f"reward of prompt {i}, candidate {j} is {rewards[i, j].item()}: rewards must be finite")
    rewards = rewards.detach().double().cpu()
    out = torch.empty(n, num_accepted, dtype=torch.long)
    for i in range(n):
        left = torch.ones(m, dtype=torch.bool)
        accepted: list[int] = []
        while len(accepted) < num_accepted:
            r_max = rewards[i][left].max()
            order = torch.randperm(m, generator=generator)
            u = torch.rand(m, generator=generator, dtype=torch.float64)
            for j in order.tolist():
                if not left[j]:
                    continue
                if u[j] < torch.exp((rewards[i, j] - r_max) / beta):
                    accepted.append(j)
                    left[j] = False
                    if len(accepted) == num_accepted:
                        break
        out[i] = torch.tensor(accepted)
    return out


class RSO(OnlineDPO):
    """RSO on the arithmetic task or any prompt file (see the module docstring).

    Args:
        model: the SFT model (policy and fixed reference start there; candidates come from the reference).
        judge: a :class:`~policylab.judges.ScalarJudge` (reward model, verifier) or a check's dotted path.
        num_candidates: ``N`` candidates sampled per prompt from the SFT model (the paper's 64).
        num_accepted: ``k`` accepted per prompt (the paper's 8).
        sampling_beta: the ``beta`` of ``pi*`` in the acceptance ``exp((r - r_max) / beta)`` (0.5).
        pairing: ``disjoint`` (the paper's random pairs: the accepted ones, in their random
            accepted set shuffled, then paired as (1st, 2nd), (3rd, 4th), ...), or ``best_vs_worst`` /
            ``random_pair`` / ``all_pairs`` over the accepted set; the higher reward is chosen, equal
            rewards are dropped and counted.
        loss_type: ``hinge`` (hinge-norm, the paper's choice) or ``sigmoid`` (sigmoid-norm), or any
            registry entry; ``beta``: the loss's ``gamma`` (TRL: 0.1; hinge margin ``1 / beta``).
        temperature: sampling temperature of the candidates (1: exact draws of ``pi_sft``).
        kwargs: the other sampling, iteration and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO`.
    """

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        num_candidates: int = 64,
        num_accepted: int = 8,
        sampling_beta: float = 0.5,
        pairing: str = "disjoint",
        loss_type: str = "hinge",
        beta: float = 0.1,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if pairing not in RSO_PAIRINGS:
            raise ValueError(f"pairing must be one of {', '.join(RSO_PAIRINGS)}, got {pairing!r}")
        if not 2 <= num_accepted <= num_candidates:
            raise ValueError(
                f"num_accepted must lie in [2, num_candidates={num_candidates}] (a pair needs two), got {num_accepted}"
            )
        if pairing == "disjoint" and num_accepted % 2:
            raise ValueError(f"pairing 'disjoint' pairs the accepted responses two by two: num_accepted {num_accepted}")
        if not sampling_beta > 0:
            raise ValueError(f"sampling_beta must be > 0, got {sampling_beta}")
        super().__init__(
            model,
            judge=judge,
            loss_type=loss_type,
            beta=beta,
            num_generations=num_candidates,
            pair_rule="best_vs_worst" if pairing == "disjoint" else pairing,
            temperature=temperature,
            reference_update="fixed",
            **kwargs,
        )
        if not self.needs_reference:
            raise ValueError(f"RSO samples from the SFT reference: loss_type {loss_type!r} has none")

    def sample_completions(self, prompts: list[str], seed: int):
        """``num_candidates`` completions per prompt from the SFT model (the fixed reference)."""
        n = self.hparams.num_candidates
        if self.reference is not None:
            return self.sampler.sample(self.reference, prompts, num_samples=n, seed=seed)
        with self.policy.disable_adapter():  # LoRA: the reference is the base model
            return self.sampler.sample(self.policy, prompts, num_samples=n, seed=seed)

    def make_pairs(self, scores: Tensor, generator: torch.Generator) -> Pairs:
        """Rejection-sample ``num_accepted`` of each prompt's candidates, then pair them."""
        h = self.hparams
        n, m = scores.shape
        accepted = statistical_rejection_sampling(scores, h.num_accepted, h.sampling_beta, generator)  # [N, k]
        if h.pairing == "disjoint":  # random pairs: the accepted set shuffled, then (1st, 2nd), (3rd, 4th), ...
            accepted = accepted.gather(1, torch.rand(accepted.shape, generator=generator).argsort(1))
            within = build_pairs(scores.gather(1, accepted).reshape(-1, 2), "random_pair", self.settings.keep_ties)
            prompt = within.prompt // (h.num_accepted // 2)
            usable = int(torch.unique(prompt).numel())
        else:
            within = build_pairs(scores.gather(1, accepted), h.pairing, self.settings.keep_ties, generator)
            prompt, usable = within.prompt, within.usable_prompts
        # a pair's rows index the flattened [N, k] accepted set (also for the [N*k/2, 2] view): back to candidates
        flat = accepted.reshape(-1)
        chosen = flat[within.chosen] + prompt * m
        rejected = flat[within.rejected] + prompt * m
        return Pairs(chosen, rejected, prompt, within.dropped_ties, usable)

    @torch.no_grad()
    def _kl_estimate(self, rows: dict[str, Tensor]) -> Tensor:
        """``KL(pi_sft || pi)``: the mean of ``log pi_sft(y) - log pi(y)`` over the candidates, which
        are samples of ``pi_sft`` (logged as ``online/kl``)."""
        return -super()._kl_estimate(rows)
