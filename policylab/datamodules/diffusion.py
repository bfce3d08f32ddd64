"""Prompts and images for the diffusion methods.

- :class:`PromptDataModule`: prompts for the methods that sample (``.txt``, one per non-empty
  line, or ``.jsonl`` with ``prompt`` or ``caption``).
- :class:`ImagePairDataModule`: preference pairs in the Pick-a-Pic layout (``caption``,
  ``jpg_0``, ``jpg_1``, ``label_0``: 1 when image 0 is preferred, 0 when image 1 is, 0.5 for
  a tie), winner first, for Diffusion-DPO and SmPO.
- :class:`ImageDataModule`: single captioned images (``caption``, ``jpg``), or the winners of a
  pair file, for SePPO and Diffusion-DRO.

Image sources: a Parquet file whose image columns hold encoded image bytes (as Pick-a-Pic v2
does), a JSONL file whose image columns are paths relative to its folder, or a folder holding
``metadata.jsonl`` (read as that JSONL) or ``*.parquet`` files. Columns, captions, labels, scores
and image files are checked at ``setup``; images are decoded when read. Every error names the
file, the row (1-based; the line number in JSONL) and the column.

Images: RGB, the shorter side resized to ``resolution``, center-cropped, in ``[-1, 1]``; the
optional random horizontal flip (training only) flips both images of a pair together.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, IterableDataset

from policylab.datamodules.text import read_jsonl


class ImageDataError(ValueError):
    """A prompt or image file, row or image that cannot be used; the message says which."""


@dataclass(frozen=True)
class ImageRef:
    """An image to decode: encoded bytes or a file path, and where it comes from (for errors)."""

    source: bytes | Path
    where: str


@dataclass
class Row:
    """One row of a file; its accessors check a value and name file, row and column if it is bad."""

    file: Path
    number: int
    values: dict

    def where(self, column: str) -> str:
        return f"{self.file}, row {self.number}, column {column!r}"

    def get(self, column: str) -> Any:
        value = self.values.get(column)
        if value is None:
            raise ImageDataError(f"{self.where(column)}: missing or null")
        return value

    def text(self, column: str) -> str:
        value = self.get(column)
        if not isinstance(value, str):
            raise ImageDataError(f"{self.where(column)}: expected a string, got {type(value).__name__}")
        if not value.strip():
            raise ImageDataError(f"{self.where(column)}: empty text")
        return value

    def score(self, column: str) -> float:
        value = self.get(column)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise ImageDataError(f"{self.where(column)}: expected a finite number, got {self.values[column]!r}")
        return value

    def label(self, column: str = "label_0") -> float:
        value = self.get(column)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 0.5, 1):
            raise ImageDataError(
                f"{self.where(column)}: expected 1 (image 0 preferred), 0 (image 1 preferred) or 0.5 (tie), "
                f"got {value!r}"
            )
        return float(value)

    def image(self, column: str) -> ImageRef:
        """Encoded bytes, or a path relative to the file's folder (which must exist)."""
        value = self.get(column)
        if isinstance(value, dict):  # the datasets Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return ImageRef(bytes(value), self.where(column))
        if isinstance(value, str):
            path = self.file.parent / value
            if not path.is_file():
                raise ImageDataError(f"{self.where(column)}: no image file {path}")
            return ImageRef(path, self.where(column))
        raise ImageDataError(
            f"{self.where(column)}: expected encoded image bytes or a path, got {type(value).__name__}"
        )


def read_table(path: str | Path, columns: Sequence[str]) -> list[Row]:
    """The rows (only ``columns``) of a Parquet or JSONL file, or of a folder holding
    ``metadata.jsonl`` or ``*.parquet`` files."""
    path = Path(path)
    if not path.exists():
        raise ImageDataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = [path / "metadata.jsonl"] if (path / "metadata.jsonl").is_file() else sorted(path.glob("*.parquet"))
        if not files:
            raise ImageDataError(f"{path}: a folder needs a metadata.jsonl or *.parquet files")
        return [row for file in files for row in read_table(file, columns)]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in columns if c in names])
        except Exception as err:  # pyarrow raises several types for broken files
            raise ImageDataError(f"{path}: unreadable Parquet file ({err})") from err
        values = table.to_pylist() if table.num_columns else [{} for _ in range(table.num_rows)]
        return [Row(path, number, row) for number, row in enumerate(values, start=1)]
    if path.suffix == ".jsonl":
        return [Row(path, number, {c: row.get(c) for c in columns}) for number, row in read_jsonl(path, ImageDataError)]
    raise ImageDataError(f"{path}: unknown format (expected .parquet, .jsonl or a folder)")


def load_image(ref: ImageRef, resolution: int) -> torch.Tensor:
    """``[3, resolution, resolution]`` in ``[-1, 1]``: RGB, shorter side resized, center crop."""
    from PIL import Image

    try:
        image = Image.open(ref.source if isinstance(ref.source, Path) else io.BytesIO(ref.source)).convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError ... for broken data
        raise ImageDataError(f"{ref.where}: cannot decode the image ({type(err).__name__}: {err})") from err
    width, height = image.size
    if min(width, height) != resolution:
        scale = resolution / min(width, height)
        width, height = max(resolution, round(width * scale)), max(resolution, round(height * scale))
        image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - resolution) // 2, (height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    return pixels / 127.5 - 1.0


class ImageRows(Dataset):
    """Items of captioned images, decoded when read: ``images`` is ``[C, H, W]`` for one image,
    ``[k, C, H, W]`` for k; ``flip`` flips all images of an item together, half of the time."""

    def __init__(self, items: list[dict], resolution: int, flip: bool) -> None:
        self.items, self.resolution, self.flip = items, resolution, flip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        images = torch.stack([load_image(ref, self.resolution) for ref in item["images"]])
        if self.flip and torch.rand(()) < 0.5:
            images = images.flip(-1)
        return item | {"images": images[0] if len(images) == 1 else images}


def collate(items: list[dict]) -> dict[str, Any]:
    """``caption`` as a list of strings; every other key stacked into a float tensor."""
    batch: dict[str, Any] = {"caption": [item["caption"] for item in items]}
    for key in [key for key in items[0] if key != "caption"]:
        batch[key] = torch.stack([torch.as_tensor(item[key], dtype=torch.float32) for item in items])
    return batch


class ImageFileDataModule(L.LightningDataModule):
    """What the image datamodules share: reading files, checking rows, decoding, loaders.
    A subclass names the ``columns`` it reads and turns checked rows into items (:meth:`items`)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[dict]] = {}
        self.ties_dropped: dict[str, int] = {}  # per split, with ties="drop"

    @property
    def columns(self) -> list[str]:
        raise NotImplementedError

    def items(self, rows: list[Row], split: str) -> list[dict]:
        raise NotImplementedError

    def pair_items(self, rows: list[Row], split: str, ties: str, score_columns: Sequence[str] = ()) -> list[dict]:
        """Checked pairs, winner first; ``label`` is 1.0, or 0.5 for a tie kept in file order."""
        items = []
        for row in rows:
            caption, label = row.text("caption"), row.label("label_0")
            images = (row.image("jpg_0"), row.image("jpg_1"))
            scores = tuple(row.score(column) for column in score_columns)
            if label == 0.5 and ties == "drop":
                continue
            if label == 0.0:
                images, scores = images[::-1], scores[::-1]
            item = {"caption": caption, "images": images, "label": 1.0 if label != 0.5 else 0.5}
            items.append(item | ({"scores": scores} if score_columns else {}))
        if ties == "drop":
            self.ties_dropped[split] = len(rows) - len(items)
            if len(items) < len(rows):
                rank_zero_info(
                    f"{self.hparams[f'{split}_file']}: dropped {len(rows) - len(items)} of {len(rows)} pairs that "
                    "are ties (label_0 = 0.5); ties='keep' keeps them"
                )
        return items

    def setup(self, stage: str | None = None) -> None:
        for split, path in (("train", self.hparams.train_file), ("val", self.hparams.val_file)):
            if path and split not in self.data:
                items = self.items(read_table(path, self.columns), split)
                if not items:
                    dropped = self.ties_dropped.get(split)
                    raise ImageDataError(
                        f"{path}: no usable row"
                        + (f" ({dropped} ties dropped; ties='keep' keeps them)" if dropped else "")
                    )
                self.data[split] = items

    def dataset(self, split: str) -> ImageRows:
        return ImageRows(self.data[split], self.hparams.resolution, self.hparams.random_flip and split == "train")

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        workers = self.hparams.num_workers
        return DataLoader(
            self.dataset("train"),
            batch_size=self.hparams.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=len(self.data["train"]) >= self.hparams.batch_size,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.data:
            return []
        return DataLoader(
            self.dataset("val"),
            batch_size=self.hparams.batch_size,
            collate_fn=collate,
            num_workers=self.hparams.num_workers,
        )


class ImagePairDataModule(ImageFileDataModule):
    """Pick-a-Pic image pairs, winner first.

    Batches: ``caption`` (list of str), ``images`` ``[B, 2, C, H, W]`` in ``[-1, 1]`` (winner
    first), ``label`` ``[B]`` (the probability that the first image is preferred: 1.0, or 0.5 for
    a kept tie), and ``scores`` ``[B, 2]`` (the ``score_columns``, reordered with the images).
    ``ties="drop"`` leaves ties out (``ties_dropped`` counts them per split); ``"keep"`` keeps them.
    """

    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        resolution: int = 32,
        batch_size: int = 16,
        ties: str = "drop",
        random_flip: bool = False,
        score_columns: Sequence[str] | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if ties not in ("drop", "keep"):
            raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}")
        if score_columns is not None and len(score_columns) != 2:
            raise ValueError(f"score_columns names the scores of image 0 and image 1, got {score_columns!r}")
        self.save_hyperparameters()

    @property
    def columns(self) -> list[str]:
        return ["caption", "jpg_0", "jpg_1", "label_0", *(self.hparams.score_columns or ())]

    def items(self, rows: list[Row], split: str) -> list[dict]:
        return self.pair_items(rows, split, self.hparams.ties, self.hparams.score_columns or ())


class ImageDataModule(ImageFileDataModule):
    """Captioned single images: rows of ``caption`` and ``image_column``, or with ``from_pairs``
    the winner of each non-tie pair of a Pick-a-Pic file.

    Batches: ``caption`` (list of str), ``images`` ``[B, C, H, W]`` in ``[-1, 1]``.
    """

    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        resolution: int = 32,
        batch_size: int = 16,
        image_column: str = "jpg",
        from_pairs: bool = False,
        random_flip: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    @property
    def columns(self) -> list[str]:
        return (
            ["caption", "jpg_0", "jpg_1", "label_0"]
            if self.hparams.from_pairs
            else ["caption", self.hparams.image_column]
        )

    def items(self, rows: list[Row], split: str) -> list[dict]:
        if self.hparams.from_pairs:
            return [{"caption": p["caption"], "images": p["images"][:1]} for p in self.pair_items(rows, split, "drop")]
        return [{"caption": row.text("caption"), "images": (row.image(self.hparams.image_column),)} for row in rows]


class RepeatedPrompts(IterableDataset):
    """The prompts without end, reshuffled on every pass (pass ``k`` by ``seed + k``); under
    ``torch.distributed`` each rank takes every ``world_size``-th prompt of that stream."""

    def __init__(self, prompts: list[str], seed: int) -> None:
        self.prompts, self.seed = prompts, seed

    def __iter__(self):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        position = 0
        for epoch in itertools.count():
            for index in torch.randperm(
                len(self.prompts), generator=torch.Generator().manual_seed(self.seed + epoch)
            ).tolist():
                if position % world == rank:
                    yield {"caption": self.prompts[index]}
                position += 1


class PromptDataModule(L.LightningDataModule):
    """Prompts for the methods that sample: ``.txt`` (one prompt per non-empty line) or ``.jsonl``
    (``prompt`` or ``caption``). Batches: ``{"caption": list[str]}``.

    The train loader shuffles (seeded); with ``repeat`` it never ends (reshuffling on every pass,
    so set the Trainer's ``max_steps`` and an integer ``val_check_interval``), otherwise an epoch
    is one pass. The val loader gives the val prompts once, in file order.
    """

    def __init__(
        self, train_file: str, val_file: str | None = None, batch_size: int = 16, seed: int = 0, repeat: bool = True
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prompts: dict[str, list[str]] = {}

    @staticmethod
    def read(path: str | Path) -> list[str]:
        """The prompts of a file; an empty one is an error naming file and line."""
        path = Path(path)
        if not path.is_file():
            raise ImageDataError(f"{path}: no such file")
        if path.suffix == ".txt":
            prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            prompts = []
            for number, values in read_jsonl(path, ImageDataError):
                if "prompt" not in values and "caption" not in values:
                    raise ImageDataError(f"{path}, row {number}: missing column 'prompt' (or 'caption')")
                prompts.append(Row(path, number, values).text("prompt" if "prompt" in values else "caption"))
        else:
            raise ImageDataError(f"{path}: unknown format (expected .txt or .jsonl)")
        if not prompts:
            raise ImageDataError(f"{path}: no prompt")
        return prompts

    def setup(self, stage: str | None = None) -> None:
        for split, path in (("train", self.hparams.train_file), ("val", self.hparams.val_file)):
            if path and split not in self.prompts:
                self.prompts[split] = self.read(path)

    def train_dataloader(self) -> DataLoader:
        prompts, batch_size = self.prompts["train"], self.hparams.batch_size
        if self.hparams.repeat:
            return DataLoader(RepeatedPrompts(prompts, self.hparams.seed), batch_size=batch_size, collate_fn=collate)
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(
            [{"caption": p} for p in prompts],
            batch_size=batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=collate,
        )

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.prompts:
            return []
        return DataLoader(
            [{"caption": p} for p in self.prompts["val"]], batch_size=self.hparams.batch_size, collate_fn=collate
        )
