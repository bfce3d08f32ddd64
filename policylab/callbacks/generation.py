"""Accuracy of greedy answers under a programmatic judge, for language-model runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from policylab.callbacks.evaluation import log_evaluation
from policylab.datamodules.text import read_rows


def import_object(dotted: str) -> Callable:
    """``"package.module.name"`` -> the object."""
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {dotted!r} ({err})") from err


class GreedyAccuracy(Callback):
    """Every ``every_n_steps`` training steps, and once in ``validate``/``test``, answer the
    ``prompt`` of each row of ``eval_file`` greedily with the module's ``policy`` (at most
    ``max_new_tokens`` new tokens) and log the fraction that ``judge(prompt, answer)`` accepts
    as ``eval/accuracy``. ``judge`` is a dotted path (default: the addition task's).
    ``every_n_steps: 0`` evaluates only in ``validate``/``test``."""

    def __init__(
        self,
        eval_file: str,
        judge: str = "policylab.tasks.arithmetic.is_correct",
        every_n_steps: int = 500,
        max_new_tokens: int = 8,
        batch_size: int = 128,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        rows = read_rows(eval_file)[:limit]
        if not rows or any("prompt" not in r for r in rows):
            raise ValueError(f"{eval_file}: GreedyAccuracy needs rows with a 'prompt' column")
        self.prompts = [r["prompt"] for r in rows]
        self.judge = import_object(judge)
        self.every_n_steps, self.max_new_tokens, self.batch_size = every_n_steps, max_new_tokens, batch_size
        self.last_accuracy: float | None = None

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
                    **tokens, max_new_tokens=self.max_new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
                out += tokenizer.batch_decode(generated[:, tokens["input_ids"].shape[1] :], skip_special_tokens=True)
        finally:
            tokenizer.padding_side = side
        return out

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        was_training = pl_module.training
        pl_module.eval()
        try:
            answers = self.answers(pl_module.policy, trainer.datamodule.tokenizer)
        finally:
            pl_module.train(was_training)
        self.last_accuracy = sum(bool(self.judge(p, a)) for p, a in zip(self.prompts, answers)) / len(self.prompts)
        return self.last_accuracy

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.every_n_steps or trainer.global_step % self.every_n_steps != 0:
            return
        log_evaluation(trainer, pl_module, {"eval/accuracy": self.evaluate(trainer, pl_module)}, prog_bar=True)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            pl_module.log("eval/accuracy", self.evaluate(trainer, pl_module))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("eval/accuracy", self.evaluate(trainer, pl_module))
