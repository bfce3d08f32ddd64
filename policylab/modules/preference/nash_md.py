"""Nash-MD: Nash learning from human feedback by mirror descent (Munos et al., 2023, "Nash
Learning from Human Feedback", arXiv:2312.00886; HF TRL's NashMDTrainer).

NLHF looks for the policy that a pairwise preference model prefers to any other (the Nash
equilibrium of the KL-regularized preference game). Nash-MD plays each policy against the
geometric mixture of itself and the reference ``mu``: ``pi^alpha(y|x) ∝ pi_theta(y|x)^(1-alpha)
mu(y|x)^alpha`` (the paper's regularized policy of the Nash-MD update; sampled token by token
as ``softmax(alpha * logits_ref + (1 - alpha) * logits_theta)``, as TRL's GeometricMixtureWrapper
does). Its form for deep networks, Nash-MD-PG, is a policy gradient on the policy's own samples:
per prompt, ``y ~ pi_theta`` and ``y' ~ pi^alpha``; the judge gives ``p = P(y > y' | x)``; the
step follows ``(p - 1/2) grad log pi_theta(y|x)`` minus ``beta`` times a REINFORCE estimate of the
KL's gradient to ``mu`` (:func:`policylab.losses.nash_md.nash_md_loss`, TRL's loss: per-token
log-ratios, the 1/2 control variate; only ``y`` is trained on, ``y'`` is only compared against).

Here :class:`NashMD` is the :class:`~policylab.modules.preference.OnlineDPO` loop with: two
completions per prompt, ``y`` from the policy and ``y'`` from the mixture (HFSampler's
``reference=``/``mixture_coef=``); a pairwise judge (a :class:`~policylab.judges.PairwiseJudge`,
or a scalar judge / a check's dotted path as Bradley-Terry ``sigma(r_y - r_y')``, which is TRL's
``sigmoid(score(y) - score(y'))``); every prompt stored as a pair ``(y, y')`` with ``p`` in the
field ``probability``; and the step's loss on the policy's samples only. TRL samples and trains
every step (``generate_every_n_steps: 1``, the default): with more steps per iteration the later
steps reuse samples of an older policy, which REINFORCE does not correct for.

Logged per iteration besides OnlineDPO's: ``online/preference`` (mean ``p``, the policy's win
probability against the mixture); ``online/score`` is 1/2 by construction (``p`` and ``1 - p``);
``online/kl`` is estimated on the policy's samples only. Per step: ``train/score`` (mean
``(p - 1/2) log pi(y)``), ``train/kl`` (mean summed log-ratio of ``y``), ``train/probability``.
``missing_eos_penalty`` shifts the pair's log-odds, ``logit p - penalty * (u_y - u_y')`` with
``u = 1`` for a completion without EOS: for a Bradley-Terry judge exactly TRL's rule of
subtracting the penalty from the score before the sigmoid.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.callbacks.evaluation import log_evaluation
from policylab.datamodules.online import Pairs
from policylab.losses.nash_md import nash_md_loss
from policylab.modules.preference.online_dpo import OnlineDPO
from policylab.nn.sequence import model_token_log_probs
from policylab.sampling.completions import Completions

_ROW_KEYS = ("input_ids", "attention_mask", "completion_mask")


def pair_completions(first: Completions, second: Completions, pad_id: int) -> Completions:
    """Two sampler results of one completion per prompt (the same prompts) as one of two per
    prompt: prompt ``i``'s rows are ``2i`` (``first``'s) and ``2i + 1`` (``second``'s), the
    completions right padded with ``pad_id`` to the longer of the two."""
    if list(first.prompts) != list(second.prompts) or first.num_samples != 1 or second.num_samples != 1:
        raise ValueError("pair_completions needs one completion per prompt from each sampler call, same prompts")
    if first.input_ids.shape[0] and first.prompt_length != second.prompt_length:
        raise ValueError(f"prompt widths differ ({first.prompt_length} and {second.prompt_length})")
    width = max(first.input_ids.shape[1], second.input_ids.shape[1])

    def padded(name: str, value: float) -> Tensor:
        a, b = getattr(first, name), getattr(second, name)
        a = torch.nn.functional.pad(a, (0, width - a.shape[1]), value=value)
        b = torch.nn.functional.pad(b, (0, width - b.shape[1]), value=value)
        return torch.stack([a, b], 1).flatten(0, 1)

    n = len(first.prompts)
    return Completions(
        prompts=list(first.prompts),
        prompt_index=torch.arange(n, device=first.prompt_index.device).repeat_interleave(2),
        input_ids=padded("input_ids", pad_id),
        attention_mask=padded("attention_mask", 0),
        completion_mask=padded("completion_mask", 0),
        token_log_probs=padded("token_log_probs", 0.0),
        texts=[t for pair in zip(first.texts, second.texts, strict=True) for t in pair],
        finished=torch.stack([first.finished, second.finished], 1).flatten(),
        num_truncated_prompts=first.num_truncated_prompts,
        generated_tokens=first.generated_tokens + second.generated_tokens,
        seconds=first.seconds + second.seconds,
    )


def policy_rows(rows: dict[str, Tensor]) -> dict[str, Tensor]:
    """The policy's samples (even rows) of rows laid out by :func:`pair_completions`."""
    return {k: v[0::2] for k, v in rows.items()}


class NashMD(OnlineDPO):
    """Nash-MD-PG on the policy's own samples against the policy-reference mixture (see the module
    docstring).

    Args:
        model: the SFT model (policy and the fixed reference ``mu`` start there).
        judge: a :class:`~policylab.judges.PairwiseJudge` (a GPM folder through
            :class:`~policylab.judges.PreferenceModelJudge`), or a scalar judge / a check's dotted
            path, used as Bradley-Terry ``P(a > b) = sigma(r_a - r_b)``.
        beta: the KL coefficient (TRL's 0.1).
        mixture_coef: ``alpha`` of the mixture ``softmax(alpha * logits_ref + (1 - alpha) * logits)``
            (TRL's 0.5; 0: self-play against the policy, 1: against the reference).
        kwargs: the other sampling, iteration and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO` (TRL's: temperature 0.9, 64 new
            tokens, lr 5e-7, fresh samples every step).
    """

    judge_kind = "pairwise"  # a scalar judge or a check is used as Bradley-Terry

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        beta: float = 0.1,
        mixture_coef: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= mixture_coef <= 1.0:
            raise ValueError(f"mixture_coef must be in [0, 1] (0: the policy, 1: the reference), got {mixture_coef}")
        if beta < 0:
            raise ValueError(f"beta (the KL coefficient) must be >= 0, got {beta}")
        if kwargs.get("lora") is not None:
            raise ValueError(
                "NashMD samples the policy-reference mixture with two models in lock-step, and under lora the "
                "reference is the policy with its adapters off: train without lora"
            )
        if kwargs.get("sampler", "hf") != "hf":
            raise ValueError("NashMD samples the geometric mixture, which only the hf sampler does: use sampler: hf")
        # The pairwise loss of OnlineDPO is not used; "sigmoid" keeps its frozen reference.
        super().__init__(
            model, judge=judge, loss_type="sigmoid", beta=beta, num_generations=2, pair_rule="random_pair", **kwargs
        )

    # ----------------------------------------------------------------- one iteration
    def sample_completions(self, prompts: list[str], seed: int) -> Completions:
        """Per prompt, ``y`` from the policy (row ``2i``) and ``y'`` from the mixture (row ``2i + 1``)."""
        own = self.sampler.sample(self.policy, prompts, num_samples=1, seed=seed)
        mixture = self.sampler.sample(
            self.policy,
            prompts,
            num_samples=1,
            seed=(seed + 1_000_003) % 2**31,
            reference=self.reference,
            mixture_coef=self.hparams.mixture_coef,
        )
        return pair_completions(own, mixture, self.sampler.pad_token_id)

    def score_completions(self, completions: Completions) -> Tensor:
        """``[p, 1 - p]`` per prompt with ``p = P(y > y' | x)`` from the judge, ``[N * 2]``."""
        texts = list(completions.texts)
        probability = self.judge.prefer(list(completions.prompts), texts[0::2], texts[1::2]).float().cpu()
        penalty = self.settings.missing_eos_penalty
        if penalty is not None:
            unfinished = (~completions.finished.bool().cpu()).float()
            probability = torch.sigmoid(torch.logit(probability) - penalty * (unfinished[0::2] - unfinished[1::2]))
        return torch.stack([probability, 1 - probability], 1).reshape(-1)

    def make_pairs(self, scores: Tensor, generator: torch.Generator) -> Pairs:
        """Every prompt's ``(y, y')``: the policy's sample as the "chosen" row, whatever ``p`` is."""
        n = scores.shape[0]
        prompt = torch.arange(n)
        return Pairs(chosen=prompt * 2, rejected=prompt * 2 + 1, prompt=prompt, dropped_ties=0, usable_prompts=n)

    def extra_pair_fields(self, scores: Tensor, pairs: Pairs) -> dict[str, Tensor]:
        """``probability``: ``p = P(y > y' | x)`` of each pair, the loss's weight."""
        return {"probability": scores[pairs.chosen]}

    @torch.no_grad()
    def _kl_estimate(self, rows: dict[str, Tensor]) -> Tensor:
        """``KL(pi_theta || mu)`` on the policy's samples only (the mixture's are not draws of pi)."""
        return super()._kl_estimate(policy_rows(rows))

    def run_iteration(self, data, iteration: int) -> None:
        super().run_iteration(data, iteration)
        preference = float(data.pairs["probability"].mean())  # the store holds every rank's pairs
        self.last_iteration_metrics["online/preference"] = preference
        if self._logs_iteration(iteration):
            log_evaluation(self.trainer, self, {"online/preference": preference})

    # ----------------------------------------------------------------- steps
    def reference_token_log_probs(self, rows: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():
            return model_token_log_probs(self.reference, *(rows[k] for k in _ROW_KEYS))[0]

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """Nash-MD-PG's loss (:func:`~policylab.losses.nash_md.nash_md_loss`) on the batch's
        policy samples ``y`` (its "chosen" rows), averaged over the batch."""
        n = batch["input_ids"].shape[0] // 2
        width = int(batch["attention_mask"][:n].sum(1).max())
        rows = {k: batch[k][:n, :width] for k in _ROW_KEYS}
        log_pi, mask = model_token_log_probs(self.policy, *(rows[k] for k in _ROW_KEYS))
        log_ref = self.reference_token_log_probs(rows)
        probability = batch["probability"]
        loss, score, kl = nash_md_loss(log_pi, log_ref, mask, probability, self.settings.beta)
        return loss.mean(), {"score": score.detach().mean(), "kl": kl.mean(), "probability": probability.mean()}

    def batch_size(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // 2
