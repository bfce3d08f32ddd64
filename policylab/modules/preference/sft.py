"""Supervised fine-tuning (SFT) of a causal LM on (prompt, completion) rows: the usual first
stage before preference optimization (Ouyang et al., 2022; the reference model of DPO)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from policylab.modules.preference.lm import LanguageModelModule
from policylab.nn.sequence import completion_log_probs


class SFT(LanguageModelModule):
    """Minimizes the mean negative log-likelihood of the completion tokens given the prompt
    (prompt tokens and padding are masked out). Logs ``train/loss`` and ``train/token_accuracy``
    (greedy next-token accuracy on completion tokens), and the same under ``val/``. ``lora``:
    train LoRA adapters only (``peft.LoraConfig`` arguments)."""

    def __init__(
        self, model: Any, lr: float = 1e-5, weight_decay: float = 0.0, lora: dict[str, Any] | None = None
    ) -> None:
        super().__init__(model, lora)
        self.record_hyperparameters()

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.policy(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        log_probs, tokens = completion_log_probs(logits, batch["input_ids"], batch["completion_mask"])
        loss = -log_probs.sum() / tokens.sum()
        with torch.no_grad():
            hits = (logits[:, :-1].argmax(-1) == batch["input_ids"][:, 1:]).float() * batch["completion_mask"][:, 1:]
        return loss, {"token_accuracy": hits.sum() / tokens.sum()}
