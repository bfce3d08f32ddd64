"""SRPO: Self-Improving Robust Preference Optimization (Choi et al., ICLR 2025, arXiv 2406.01660).

One LM is both the generator ``pi(y|x)`` and the self-improvement policy ``pi(y'|x, y)``, which reads
a revision prompt (the prompt, a previous answer and a marker:
:func:`policylab.datamodules.self_improvement.revision_prompt`) and writes a better answer. SRPO
trains both offline on preference pairs with the non-adversarial loss ``L_alpha`` of
:mod:`policylab.losses.srpo` (two IPO-style squared terms derived from the min-max game, weighted by
``alpha``); at inference the model answers and may then revise its answer, once or repeatedly.

One training step: the six row blocks of :class:`~policylab.datamodules.SelfImprovementDataModule`
(the generator's ``y_w``, ``y_l``; each of them written as the revision of ``y_l`` and of ``y_w``)
in one forward of the policy and one of the frozen reference, their summed completion log-ratios,
``L_alpha`` averaged over pairs. Logged: ``train/loss``, ``train/self_improvement_loss``,
``train/robust_loss``, ``train/reward_accuracy`` (the generator prefers ``y_w``: ``h(y_w) > h(y_l)``),
``train/revision_accuracy`` (after ``y_l`` the improver prefers writing ``y_w``), and the same under
``val/``. :class:`SelfRevisionAccuracy` measures greedy accuracy of the answers and of their
revisions on held-out prompts.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from policylab.callbacks.generation import GreedyAccuracy
from policylab.datamodules.self_improvement import BLOCKS, revision_prompt
from policylab.losses.srpo import SelfImprovementRatios, srpo_loss, srpo_terms
from policylab.modules.preference.dpo import DPO
from policylab.modules.pretrained import PretrainedModule
from policylab.sampling import HFSampler


class SRPO(DPO):
    """SRPO on offline pairs laid out by :class:`~policylab.datamodules.SelfImprovementDataModule`.

    Args:
        model: the SFT model (name, path or model); the reference starts as a frozen copy of it.
        beta: the KL weight of both players (targets of the squared terms are ``(p - 1/2)/beta``).
        alpha: the weight of the self-improvement term (``1 - alpha``: the robust term), in ``[0, 1]``.
        kwargs: :class:`~policylab.modules.preference.DPO`'s ``reference_model``, ``lora``,
            ``disable_dropout``, ``lr``, ``weight_decay``. The loss is SRPO's (no ``loss_type``);
            ``precompute_reference`` is not supported (six row blocks per pair, not two).

    A ``preference_probability`` field of the batch (``extra_fields``) sets ``p = P(y_w > y_l)`` per
    pair; without it the labels are hard (``p = 1``).
    """

    def __init__(self, model: Any, beta: float = 0.1, alpha: float = 0.5, **kwargs: Any) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if kwargs.get("precompute_reference"):
            raise ValueError(
                "SRPO computes reference log-probs of six row blocks per pair: leave precompute_reference off"
            )
        super().__init__(model, loss_type="ipo", beta=beta, **kwargs)

    def batch_size(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // len(BLOCKS)

    def ratios(self, batch: dict) -> SelfImprovementRatios:
        """The six blocks' summed completion log-ratios ``log pi - log pi_ref`` (one forward each model)."""
        rows = batch["input_ids"].shape[0]
        if rows % len(BLOCKS):
            raise ValueError(
                f"SRPO reads batches of {len(BLOCKS)} row blocks per pair (SelfImprovementDataModule), got {rows} rows"
            )
        logp = self._log_probs(self.policy, batch)[0]
        ratio = logp - self.reference_log_probs(batch)
        return SelfImprovementRatios(*ratio.chunk(len(BLOCKS)))

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.ratios(batch)
        preference = batch.get("preference_probability", 1.0)
        beta, alpha = self.hparams.beta, self.hparams.alpha
        loss = srpo_loss(r, beta, alpha, preference).mean()
        with torch.no_grad():
            self_term, robust_term = srpo_terms(r, beta, preference)
        return loss, {
            "self_improvement_loss": self_term.mean(),
            "robust_loss": robust_term.mean(),
            "reward_accuracy": (r.chosen > r.rejected).float().mean().detach(),
            "revision_accuracy": (r.revise_rejected_to_chosen > r.revise_rejected_to_rejected).float().mean().detach(),
            "reward_margin": (beta * (r.chosen - r.rejected)).mean().detach(),
        }

    validation_step = PretrainedModule.validation_step


class SelfRevisionAccuracy(GreedyAccuracy):
    """:class:`~policylab.callbacks.GreedyAccuracy` of the generator (``eval/accuracy``) and of
    ``revisions`` rounds of greedy self-revision: each answer is put in a revision prompt
    (:func:`~policylab.datamodules.self_improvement.revision_prompt` with ``revision_marker``, which
    must be the data's) and answered again greedily (:class:`policylab.sampling.HFSampler`,
    temperature 0); round ``n``'s accuracy is ``eval/revision_accuracy_<n>``. The checkpoint monitor
    stays the generator's ``eval/accuracy``."""

    def __init__(
        self,
        eval_file: str,
        revision_marker: str = "\nImproved answer:\n",
        revisions: int = 1,
        judge: str = "policylab.tasks.arithmetic.is_correct",
        every_n_steps: int = 500,
        max_new_tokens: int = 8,
        batch_size: int = 128,
        limit: int | None = None,
    ) -> None:
        super().__init__(eval_file, judge, every_n_steps, max_new_tokens, batch_size, limit)
        if revisions < 1:
            raise ValueError(f"revisions must be >= 1, got {revisions}")
        self.revision_marker, self.revisions = revision_marker, revisions
        self.revision_scores: list[Tensor] = []

    def _score(self, answers: list[str]) -> Tensor:
        return torch.tensor([float(bool(self.judge(p, a))) for p, a in zip(self.prompts, answers)])

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        tokenizer = trainer.datamodule.tokenizer
        was_training = pl_module.training
        pl_module.eval()
        try:
            answers = self.answers(pl_module.policy, tokenizer)
            first = self._score(answers)
            greedy = HFSampler(
                tokenizer, max_new_tokens=self.max_new_tokens, temperature=0.0, batch_size=self.batch_size
            )
            self.revision_scores = []
            for _ in range(self.revisions):
                prompts = [revision_prompt(p, a, self.revision_marker) for p, a in zip(self.prompts, answers)]
                answers = list(greedy.sample(pl_module.policy, prompts).texts)
                self.revision_scores.append(self._score(answers))
        finally:
            pl_module.train(was_training)
        return first

    def step_metrics(self, scores: Tensor) -> dict[str, float]:
        metrics = super().step_metrics(scores)
        for n, revised in enumerate(self.revision_scores, start=1):
            metrics[f"eval/revision_accuracy_{n}"] = revised.mean().item()
        return metrics
