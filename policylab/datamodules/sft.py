"""Supervised fine-tuning rows for language models: ``prompt`` and ``completion``.

File formats, chat messages, tokenization, truncation and bad-row handling are those of
:mod:`policylab.datamodules.text`; batches are right-padded with attention and completion masks.
"""

from __future__ import annotations

import torch

from policylab.datamodules.text import TokenizedTextDataModule


class SFTDataModule(TokenizedTextDataModule):
    """Tokenized (prompt, completion) rows for :class:`~policylab.modules.preference.SFT`."""

    columns = ("prompt", "completion")

    def tokenize_row(self, row: dict) -> dict:
        self.check_columns(row)
        prompt = self.prompt_ids(self.render(row["prompt"], prompt=True))
        completion = self.completion_ids(self.render(row["completion"], prompt=False), len(prompt), "completion")
        return {"prompt": prompt, "completion": completion} | self.extra_values(row)

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.batch([(r["prompt"], r["completion"]) for r in rows], rows)
