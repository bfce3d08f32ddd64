"""Evaluations that score a module's outputs prompt by prompt against the start of training,
and the accuracy of greedy answers under a programmatic judge for language-model runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from policylab.callbacks.evaluation import log_evaluation
from policylab.datamodules.text import read_rows
from policylab.metrics import WinRate


def import_object(dotted: str) -> Callable:
    """``"package.module.name"`` -> the object."""
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {dotted!r} ({err})") from err


class ScoredEvaluation(Callback):
    """What evaluations that score one output per prompt share (:class:`GreedyAccuracy`,
    :class:`~policylab.callbacks.ImageRewardEvaluation`): the scores at fit start; every
    ``every_n_steps`` training steps the mean score as ``metric``, any :meth:`step_metrics` of
    the subclass, and ``eval/win_rate`` against the start output for output (ties count half;
    :class:`policylab.metrics.WinRate`); the mean once in ``validate``/``test``. The start scores
    are saved in checkpoints: a resumed run keeps comparing with the run's starting model, not
    with the weights it resumed from. A subclass gives :meth:`evaluate`."""

    metric = "eval/score"

    def __init__(self, every_n_steps: int) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.start_scores: torch.Tensor | None = None  # the scores of the outputs at fit start
        self._resumed = False  # start_scores came from a checkpoint

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """One score per prompt for the module's current outputs."""
        raise NotImplementedError

    def step_metrics(self, scores: torch.Tensor) -> dict[str, float]:
        """The metrics logged during training: the mean score (subclasses add theirs)."""
        return {self.metric: scores.mean().item()}

    def state_dict(self) -> dict:
        return {} if self.start_scores is None else {"start_scores": self.start_scores}

    def load_state_dict(self, state_dict: dict) -> None:
        if "start_scores" in state_dict:
            self.start_scores, self._resumed = state_dict["start_scores"], True

    def evaluate_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """The scores of the run's starting model (a subclass may also log them)."""
        return self.evaluate(trainer, pl_module)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._resumed:  # the start scores came with the checkpoint
            self._resumed = False
        else:
            self.start_scores = self.evaluate_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.every_n_steps or trainer.global_step % self.every_n_steps != 0:
            return
        scores = self.evaluate(trainer, pl_module)
        metrics = self.step_metrics(scores)
        if self.start_scores is not None:
            win_rate = WinRate()
            win_rate.update(scores, self.start_scores)
            metrics["eval/win_rate"] = win_rate.compute().item()
        log_evaluation(trainer, pl_module, metrics, prog_bar=True)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            pl_module.log(self.metric, self.evaluate(trainer, pl_module).mean().item())

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log(self.metric, self.evaluate(trainer, pl_module).mean().item())


class GreedyAccuracy(ScoredEvaluation):
    """Every ``every_n_steps`` training steps, and once in ``validate``/``test``, answer the
    ``prompt`` of each row of ``eval_file`` greedily with the module's ``policy`` (at most
    ``max_new_tokens`` new tokens) and log the fraction that ``judge(prompt, answer)`` accepts
    as ``eval/accuracy``. ``judge`` is a dotted path (default: the addition task's).
    ``every_n_steps: 0`` evaluates only in ``validate``/``test``.

    During ``fit`` it also logs ``eval/win_rate``: how often the current answer beats the
    answer the model gave to the same prompt when training started (judge scores compared,
    ties count half; :class:`policylab.metrics.WinRate`), also after a resume."""

    metric = "eval/accuracy"

    def __init__(
        self,
        eval_file: str,
        judge: str = "policylab.tasks.arithmetic.is_correct",
        every_n_steps: int = 500,
        max_new_tokens: int = 8,
        batch_size: int = 128,
        limit: int | None = None,
    ) -> None:
        super().__init__(every_n_steps)
        rows = read_rows(eval_file)[:limit]
        if not rows or any("prompt" not in r for r in rows):
            raise ValueError(f"{eval_file}: GreedyAccuracy needs rows with a 'prompt' column")
        self.prompts = [r["prompt"] for r in rows]
        self.judge = import_object(judge)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    @torch.no_grad()
    def answers(self, policy, tokenizer) -> list[str]:
        """Greedy completions of every prompt (left-padded batches, EOS stops)."""
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        out: list[str] = []
        try:
            for start in range(0, len(self.prompts), self.batch_size):
                prompts = self.prompts[start : start + self.batch_size]
                tokens = tokenizer(prompts, return_tensors="pt", padding=True).to(policy.device)
                generated = policy.generate(
                    **tokens,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                out += tokenizer.batch_decode(generated[:, tokens["input_ids"].shape[1] :], skip_special_tokens=True)
        finally:
            tokenizer.padding_side = side
        return out

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """The judge's verdict (1 or 0) on the current greedy answer to every prompt."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            answers = self.answers(pl_module.policy, trainer.datamodule.tokenizer)
        finally:
            pl_module.train(was_training)
        return torch.tensor([float(bool(self.judge(p, a))) for p, a in zip(self.prompts, answers)])
