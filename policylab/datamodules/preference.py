"""Preference pairs for language models: rows of ``prompt``, ``chosen``, ``rejected``.

File formats, chat messages, tokenization, truncation and bad-row handling are those of
:mod:`policylab.datamodules.text`. Batches hold the chosen rows then the rejected rows (``2B``
sequences, right-padded) with attention and completion masks, plus each ``extra_fields`` value
(a label-flip probability, win-rate estimates, a semantic distance) as a ``[B]`` tensor. A row
whose chosen and rejected texts are identical, or become identical token ids (a difference past
``max_length``, or text the tokenizer maps to the same unknown tokens), is a bad row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from policylab.datamodules.text import TokenizedTextDataModule


class PreferenceDataModule(TokenizedTextDataModule):
    """Tokenized preference pairs for :class:`~policylab.modules.preference.DPO` and relatives.

    ``semantic_model`` (a path or name of a Hugging Face encoder, loaded offline from a local
    folder): each row gets ``semantic_distance``, the cosine distance between the mean-pooled
    embeddings of its prompt and its chosen response, which Sem-DPO weights pairs by (the data's
    tokenizer serves a model folder that has none). Rows that already have a
    ``semantic_distance`` keep it.
    """

    columns = ("prompt", "chosen", "rejected")

    def __init__(
        self,
        train_file: str,
        tokenizer: Any,
        val_file: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        max_prompt_length: int = 256,
        extra_fields: Sequence[str] = (),
        bad_rows: str = "error",
        seed: int = 0,
        semantic_model: str | None = None,
    ) -> None:
        super().__init__(
            train_file, tokenizer, val_file, batch_size, max_length, max_prompt_length, extra_fields, bad_rows, seed
        )

    @property
    def row_fields(self) -> list[str]:
        fields = super().row_fields
        if self.hparams.semantic_model is not None and "semantic_distance" not in fields:
            fields.append("semantic_distance")
        return fields

    def prepare_rows(self, rows: list[dict]) -> list[dict]:
        if self.hparams.semantic_model is None:
            return rows
        from policylab.nn.embedding import SentenceEmbedder, cosine_distance

        todo = [r for r in rows if "semantic_distance" not in r and r.get("prompt") and r.get("chosen")]
        if todo:
            embed = SentenceEmbedder(self.hparams.semantic_model, tokenizer=self.tokenizer)
            prompts = embed([self.render(r["prompt"], prompt=True) for r in todo])
            chosen = embed([self.render(r["chosen"], prompt=False) for r in todo])
            for row, distance in zip(todo, cosine_distance(prompts, chosen).tolist()):
                row["semantic_distance"] = distance
        return rows

    def tokenize_row(self, row: dict) -> dict:
        """Token ids of one row; raises ``ValueError`` with the reason for a bad row."""
        self.check_columns(row)
        prompt = self.render(row["prompt"], prompt=True)
        chosen, rejected = (self.render(row[key], prompt=False) for key in ("chosen", "rejected"))
        if chosen == rejected:
            raise ValueError("chosen and rejected are identical")
        out = {"prompt": self.prompt_ids(prompt)}
        for key, text in (("chosen", chosen), ("rejected", rejected)):
            out[key] = self.completion_ids(text, len(out["prompt"]), key)
        if out["chosen"] == out["rejected"]:
            if self.full_completion_ids(chosen) != self.full_completion_ids(rejected):
                raise ValueError(
                    f"chosen and rejected differ only past max_length {self.hparams.max_length} (prompt "
                    f"{len(out['prompt'])} tokens): identical after truncation, the pair teaches nothing"
                )
            unknown = self.tokenizer.unk_token
            raise ValueError(
                "chosen and rejected are different texts but the tokenizer gives them the same tokens"
                + (f" (characters it does not know become {unknown})" if unknown else "")
            )
        return out | self.extra_values(row)

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and ``completion_mask`` of shape ``[2B, T]`` (chosen
        rows first, then rejected), right-padded, plus each extra field as ``[B]``."""
        sequences = [(r["prompt"], r["chosen"]) for r in rows] + [(r["prompt"], r["rejected"]) for r in rows]
        return self.batch(sequences, rows)
