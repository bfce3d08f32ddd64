"""Text rows for language-model methods: reading files and tokenizing prompts and completions.

Files: JSON lines (``.jsonl``), Parquet (``.parquet``) or a directory written by HF
``datasets`` (``save_to_disk``). Texts are strings, or chat messages
(``[{"role": ..., "content": ...}]``) rendered with the tokenizer's chat template. Optional
numeric per-row fields are passed through as tensors when named in ``extra_fields``.

Tokenization: the prompt with the tokenizer's special tokens (its BOS), each completion without
them and followed by EOS. Truncation keeps the *end* of the prompt (at most
``max_prompt_length`` tokens) and then the *start* of the completion, within ``max_length``.
A completion mask is 1 only on completion tokens, so prompts and padding never enter a
log-probability or a loss.

Bad rows (a missing column, an empty text, a completion with no token left after truncation,
and what a subclass adds) stop loading with the file and line (JSONL) or row number, or with
``bad_rows="skip"`` are left out and counted (``skipped`` holds the reasons by number). Each
split reports in one info line how many rows it skipped and how many prompts and completions
it truncated (``truncated`` holds the counts). JSONL files must be UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader


class TextDataError(ValueError):
    """A text-data file or row that cannot be used; the message names the file and the row."""


def read_jsonl(path: str | Path, error: type[ValueError] = TextDataError) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-empty line of a UTF-8 JSONL file; a line that is not
    UTF-8 or not a JSON object raises ``error`` naming the file and the line."""
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise error(
                    f"{path}, line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} "
                    "of the line); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}, line {number}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise error(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` file, a ``.parquet`` file or a ``datasets`` directory, as dicts."""
    return [row for _, row in read_numbered_rows(path)[1]]


def read_numbered_rows(path: str | Path) -> tuple[str, list[tuple[int, dict[str, Any]]]]:
    """``(unit, [(number, row), ...])``: the rows of :func:`read_rows` with the number an error
    should name them by; ``unit`` is ``"line"`` for JSONL (the file's line numbers, blank lines
    counted) and ``"row"`` otherwise (1-based)."""
    path = Path(path)
    if not path.exists():
        raise TextDataError(f"{path}: no such file or directory")
    if path.is_dir():
        import datasets

        try:
            rows = datasets.load_from_disk(str(path)).to_list()
        except (FileNotFoundError, ValueError) as err:
            raise TextDataError(f"{path}: not a dataset saved with datasets.save_to_disk ({err})") from err
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises several types for broken files
            raise TextDataError(f"{path}: unreadable Parquet file ({err})") from err
    elif path.suffix in (".jsonl", ".json"):
        return "line", read_jsonl(path)
    else:
        raise TextDataError(f"{path}: unknown format (expected .jsonl, .parquet or a datasets directory)")
    return "row", list(enumerate(rows, start=1))


def load_tokenizer(tokenizer: Any):
    """A tokenizer object as it is, or the one ``AutoTokenizer`` loads from a name or folder (a
    missing local folder is named); the pad token defaults to EOS, and an EOS token is required."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        from policylab.modules.hub import pretrained_source

        try:
            source = pretrained_source(tokenizer, "tokenizer")
        except FileNotFoundError as err:
            raise TextDataError(str(err)) from None
        tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise TextDataError("the tokenizer has no EOS token; completions must end with one")
    return tokenizer


def render(tokenizer, text: Any, prompt: bool) -> str:
    """A string as it is; chat messages through the tokenizer's chat template (a prompt with the
    generation prompt appended), or joined when the tokenizer has none."""
    if isinstance(text, str):
        return text
    if isinstance(text, list) and all(isinstance(m, dict) and "content" in m for m in text):
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(text, tokenize=False, add_generation_prompt=prompt)
        return "".join(m["content"] for m in text)
    raise TypeError(f"expected a string or a list of chat messages, got {type(text).__name__}")


class TokenizedTextDataModule(L.LightningDataModule):
    """What the SFT and preference datamodules share: files, tokenizer, truncation, bad rows,
    loaders. A subclass names its ``columns``, tokenizes a row (:meth:`tokenize_row`) and
    builds batches (:meth:`collate`).

    ``tokenizer`` is a Hugging Face tokenizer or the name/path ``AutoTokenizer`` loads.
    """

    columns: tuple[str, ...] = ()

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
    ) -> None:
        super().__init__()
        if bad_rows not in ("error", "skip"):
            raise ValueError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")
        if max_prompt_length >= max_length:
            raise ValueError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = load_tokenizer(tokenizer)
        self.skipped: dict[str, list[tuple[int, str]]] = {}  # split -> (line or row number, reason)
        self.truncated: dict[str, dict[str, int]] = {}  # split -> {"prompts": n, "completions": m}
        self._row_truncated = {"prompts": 0, "completions": 0}
        self._tokenized: dict[str, list[dict]] = {}
        self._attached: list[str] = []  # per-row fields added after loading (attach_values)

    # ----------------------------------------------------------------- tokenization
    def render(self, text: Any, prompt: bool) -> str:
        """:func:`render` with this datamodule's tokenizer."""
        return render(self.tokenizer, text, prompt)

    def check_columns(self, row: dict) -> None:
        missing = [key for key in self.columns if key not in row or row[key] is None]
        if missing:
            raise ValueError(f"missing column {', '.join(missing)}")

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids, keeping the last ``max_prompt_length`` (counted as truncated)."""
        if not prompt.strip():
            raise ValueError("empty prompt")
        ids = self.tokenizer(prompt).input_ids
        if len(ids) > self.hparams.max_prompt_length:
            self._row_truncated["prompts"] += 1
        return ids[-self.hparams.max_prompt_length :]

    def full_completion_ids(self, text: str) -> list[int]:
        """A completion's token ids before truncation, ending with EOS."""
        return self.tokenizer(text, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]

    def completion_ids(self, text: str, prompt_length: int, name: str) -> list[int]:
        """The completion's token ids within ``max_length`` after the prompt (counted as truncated)."""
        if not text.strip():
            raise ValueError(f"empty {name}")
        ids = self.full_completion_ids(text)
        room = self.hparams.max_length - prompt_length
        if len(ids) > room:
            self._row_truncated["completions"] += 1
        ids = ids[:room]
        if not ids:
            raise ValueError(f"no {name} token left after truncation to max_length {self.hparams.max_length}")
        return ids

    def extra_values(self, row: dict) -> dict[str, float]:
        out = {}
        for name in self.row_fields:
            if name not in row:
                raise ValueError(f"missing column {name} (named in extra_fields)")
            out[name] = float(row[name])
        return out

    @property
    def row_fields(self) -> list[str]:
        """The numeric per-row fields that batches carry: ``extra_fields`` and what a subclass adds."""
        return list(self.hparams.extra_fields)

    def prepare_rows(self, rows: list[dict]) -> list[dict]:
        """Rows as read, before tokenization; a subclass may add fields computed from the texts."""
        return rows

    def tokenize_row(self, row: dict) -> dict:
        raise NotImplementedError

    def _tokenize_file(self, path: str, split: str) -> list[dict]:
        """Tokenize every row of ``path``; bad rows stop loading or, with ``bad_rows="skip"``, are
        counted in :attr:`skipped`; truncations are counted in :attr:`truncated`. One info line
        per split reports both."""
        unit, numbered = read_numbered_rows(path)
        prepared = self.prepare_rows([row for _, row in numbered])
        rows, skipped, truncated = [], [], {"prompts": 0, "completions": 0}
        for (number, _), row in zip(numbered, prepared):
            self._row_truncated = {"prompts": 0, "completions": 0}
            try:
                rows.append(self.tokenize_row(row))
            except (ValueError, TypeError) as err:
                if self.hparams.bad_rows == "error":
                    raise TextDataError(
                        f"{path}, {unit} {number}: {err} (bad_rows='skip' leaves such rows out)"
                    ) from err
                skipped.append((number, str(err)))
                continue
            for key, count in self._row_truncated.items():
                truncated[key] += count
        if not rows:
            first = f"; first: {unit} {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
            raise TextDataError(f"{path}: no usable row ({len(skipped)} skipped{first})")
        self.skipped[split], self.truncated[split] = skipped, truncated
        rank_zero_info(self._load_report(split, path, unit, len(rows), skipped, truncated))
        return rows

    def _load_report(self, split: str, path: str, unit: str, kept: int, skipped: list, truncated: dict) -> str:
        parts = [f"{split}: {kept} rows from {path}"]
        if skipped:
            parts.append(f"skipped {len(skipped)} bad rows (first: {unit} {skipped[0][0]}: {skipped[0][1]})")
        cut = []
        if truncated["prompts"]:
            cut.append(f"{truncated['prompts']} prompts to max_prompt_length {self.hparams.max_prompt_length}")
        if truncated["completions"]:
            cut.append(f"{truncated['completions']} completions to max_length {self.hparams.max_length}")
        if cut:
            parts.append("truncated " + " and ".join(cut))
        if len(parts) == 1:
            parts.append("none skipped or truncated")
        return "; ".join(parts)

    def setup(self, stage: str | None = None) -> None:
        if "train" not in self._tokenized:
            self._tokenized["train"] = self._tokenize_file(self.hparams.train_file, "train")
        if self.hparams.val_file and "val" not in self._tokenized:
            self._tokenized["val"] = self._tokenize_file(self.hparams.val_file, "val")

    # ----------------------------------------------------------------- batches
    def batch(self, sequences: list[tuple[list[int], list[int]]], rows: list[dict]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and ``completion_mask`` of (prompt,
        completion) token lists, plus each of ``extra_fields`` of ``rows`` as ``[len(rows)]``."""
        length = max(len(p) + len(c) for p, c in sequences)
        input_ids = torch.full((len(sequences), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), length), dtype=torch.long)
        completion = torch.zeros((len(sequences), length), dtype=torch.long)
        for i, (prompt, answer) in enumerate(sequences):
            n, m = len(prompt), len(answer)
            input_ids[i, : n + m] = torch.tensor(prompt + answer)
            attention[i, : n + m] = 1
            completion[i, n : n + m] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}
        for name in (*self.row_fields, *(n for n in self._attached if n in rows[0])):
            batch[name] = torch.tensor([r[name] for r in rows], dtype=torch.float32)
        return batch

    # ----------------------------------------------------------------- per-row values
    @property
    def splits(self) -> list[str]:
        """The loaded splits (``train``, and ``val`` with a ``val_file``)."""
        return list(self._tokenized)

    def ordered_dataloader(self, split: str) -> DataLoader:
        """Every row of ``split`` once, in file order (rows left out as bad are not in it)."""
        return DataLoader(self._tokenized[split], batch_size=self.hparams.batch_size, collate_fn=self.collate)

    def fingerprint(self, split: str) -> str:
        """A hash of the token ids of ``split``: changes when the data or tokenization does."""
        import hashlib

        digest = hashlib.sha256()
        for row in self._tokenized[split]:
            digest.update(
                json.dumps({k: v for k, v in row.items() if k not in self._attached}, sort_keys=True).encode()
            )
        return digest.hexdigest()[:16]

    def attach_values(self, split: str, values: dict[str, torch.Tensor]) -> None:
        """Store one value per row of ``split`` (in :meth:`ordered_dataloader` order) under each
        name; from then on every batch carries them as ``[B]`` tensors like the extra fields."""
        rows = self._tokenized[split]
        for name, column in values.items():
            if len(column) != len(rows):
                raise ValueError(f"attach_values: {len(column)} values of {name!r} for {len(rows)} rows of {split}")
            for row, value in zip(rows, column.tolist()):
                row[name] = value
            if name not in self._attached:
                self._attached.append(name)

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(
            self._tokenized["train"],
            batch_size=self.hparams.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=self.collate,
            drop_last=len(self._tokenized["train"]) >= self.hparams.batch_size,
        )

    def val_dataloader(self) -> DataLoader | list:
        return self.ordered_dataloader("val") if "val" in self._tokenized else []
