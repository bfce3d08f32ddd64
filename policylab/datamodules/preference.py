"""Preference pairs for language models: rows of ``prompt``, ``chosen``, ``rejected``.

File formats, chat messages, tokenization, truncation and bad-row handling are those of
:mod:`policylab.datamodules.text`. Batches hold the chosen rows then the rejected rows (``2B``
sequences, right-padded) with attention and completion masks, plus each ``extra_fields`` value
(a label-flip probability, win-rate estimates, a semantic distance) as a ``[B]`` tensor. A row
whose chosen and rejected texts are identical is a bad row.
"""

from __future__ import annotations

import torch

from policylab.datamodules.text import TokenizedTextDataModule


class PreferenceDataModule(TokenizedTextDataModule):
    """Tokenized preference pairs for :class:`~policylab.modules.preference.DPO` and relatives."""

    columns = ("prompt", "chosen", "rejected")

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
        return out | self.extra_values(row)

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and ``completion_mask`` of shape ``[2B, T]`` (chosen
        rows first, then rejected), right-padded, plus each extra field as ``[B]``."""
        sequences = [(r["prompt"], r["chosen"]) for r in rows] + [(r["prompt"], r["rejected"]) for r in rows]
        return self.batch(sequences, rows)
