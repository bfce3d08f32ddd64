"""Sentence embeddings from any Hugging Face encoder loaded by path or name (offline when the
files are local): mean of the last hidden states over the tokens, as sentence-transformers'
mean pooling. Used for Sem-DPO's semantic distances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class SentenceEmbedder:
    """``embedder(texts) -> [N, H]`` mean-pooled last hidden states of ``model`` (a path, a
    name, or a loaded ``transformers`` model). The tokenizer is the one saved with the model,
    else ``tokenizer`` (a model folder without one, sharing the data's tokenizer)."""

    def __init__(self, model: Any, tokenizer: Any = None, batch_size: int = 64, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model)) if isinstance(model, str) else tokenizer
        except (OSError, ValueError) as err:
            if tokenizer is None:
                raise ValueError(f"no tokenizer loads from {model} ({str(err).splitlines()[0]})") from err
            self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = (AutoModel.from_pretrained(str(model)) if isinstance(model, str) else model).eval()
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            )
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))
        return torch.cat(out)


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - cos(a, b)`` row by row."""
    return 1.0 - F.cosine_similarity(a, b, dim=-1)
