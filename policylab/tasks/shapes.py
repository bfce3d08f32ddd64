"""A synthetic text-to-image task with ground truth, for the diffusion methods: coloured shapes
on a light background, described by captions such as ``"a red circle"``, and a programmatic
reward that checks an image against its caption.

:func:`draw` renders a shape (random size and position, fully inside the canvas);
:func:`image_reward` finds the foreground (pixels far from the background), names its colour
by the nearest palette entry and its shape by how much of its bounding box it fills (square
about 1, circle about pi/4, triangle about 1/2), and scores 0.5 per attribute that matches the
caption. Every random choice comes from the seed.

:func:`write_dataset` (``python -m policylab.tasks.shapes --out data/shapes``) writes the files
the diffusion datamodules read: images for pretraining, Pick-a-Pic-style pairs, prompts.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (245, 245, 245)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES = ("circle", "square", "triangle")
# Fill ratio of the bounding box that separates the shapes: triangle 0.5, circle 0.785, square 1.
_TRIANGLE_BELOW, _SQUARE_ABOVE = 0.64, 0.9


def caption(shape: str, color: str) -> str:
    return f"a {color} {shape}"


def parse_caption(text: str) -> tuple[str, str]:
    """``"a red circle"`` -> ``("circle", "red")``; a caption naming no known shape or colour is
    an error that quotes it."""
    words = text.lower().replace(",", " ").split()
    shapes = [w for w in words if w in SHAPES]
    colors = [w for w in words if w in COLORS]
    if len(shapes) != 1 or len(colors) != 1:
        raise ValueError(f"caption {text!r} must name one shape of {SHAPES} and one colour of {tuple(COLORS)}")
    return shapes[0], colors[0]


def draw(shape: str, color: str, size: int = 32, rng: random.Random | None = None) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 image of one ``color`` ``shape`` on the background."""
    if shape not in SHAPES or color not in COLORS:
        raise ValueError(f"unknown shape {shape!r} or colour {color!r}")
    rng = rng or random.Random(0)
    side = rng.randint(int(0.45 * size), int(0.8 * size))
    x0, y0 = rng.randint(1, size - side - 1), rng.randint(1, size - side - 1)
    box = (x0, y0, x0 + side - 1, y0 + side - 1)
    image = Image.new("RGB", (size, size), BACKGROUND)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        pen.rectangle(box, fill=COLORS[color])
    else:
        pen.polygon(
            [(x0, y0 + side - 1), (x0 + side - 1, y0 + side - 1), (x0 + (side - 1) / 2, y0)], fill=COLORS[color]
        )
    return np.asarray(image, dtype=np.uint8)


def describe(image: np.ndarray) -> tuple[str | None, str | None]:
    """(shape, colour) read from an image, ``None`` for what cannot be read (no foreground)."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {pixels.shape}")
    foreground = np.abs(pixels - np.array(BACKGROUND, dtype=np.float32)).sum(-1) > 90
    if foreground.sum() < 4:
        return None, None
    mean = pixels[foreground].mean(0)
    color = min(COLORS, key=lambda name: float(((mean - np.array(COLORS[name])) ** 2).sum()))
    rows, cols = np.nonzero(foreground)
    fill = foreground.sum() / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    shape = "triangle" if fill < _TRIANGLE_BELOW else "square" if fill > _SQUARE_ABOVE else "circle"
    return shape, color


def image_reward(image: np.ndarray, text: str) -> float:
    """0.5 for the right colour plus 0.5 for the right shape (1.0: the image matches its caption)."""
    want_shape, want_color = parse_caption(text)
    shape, color = describe(image)
    return 0.5 * (color == want_color) + 0.5 * (shape == want_shape)


@dataclass
class ShapesTask:
    """Captions and images of the task; ``pairs`` give a matching image against one with the
    wrong colour or shape (or both) for the same caption."""

    size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def prompts(self, n: int) -> list[str]:
        return [caption(self._rng.choice(SHAPES), self._rng.choice(list(COLORS))) for _ in range(n)]

    def image(self, text: str) -> np.ndarray:
        return draw(*parse_caption(text), size=self.size, rng=self._rng)

    def pair(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(an image matching ``text``, an image that does not)."""
        shape, color = parse_caption(text)
        while True:
            other_shape, other_color = self._rng.choice(SHAPES), self._rng.choice(list(COLORS))
            if (other_shape, other_color) != (shape, color):
                break
        return self.image(text), draw(other_shape, other_color, self.size, self._rng)


def png_bytes(image: np.ndarray) -> bytes:
    """An ``[H, W, 3]`` uint8 image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _stream(seed: int, name: str) -> int:
    """A seed for the random stream of one file: each file's content is independent of the others'
    sizes."""
    return random.Random(f"shapes/{seed}/{name}").getrandbits(64)


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_atomic(path, lambda tmp: pq.write_table(pa.table(columns), tmp))


def eval_prompt_list(n: int) -> list[str]:
    """Every caption in turn (shape by shape, colour by colour), repeated up to ``n``: each
    caption is evaluated about equally often, in a fixed order."""
    return list(itertools.islice(itertools.cycle([caption(s, c) for s in SHAPES for c in COLORS]), n))


def write_dataset(
    out_dir: str | Path,
    seed: int = 0,
    pretrain: int = 4000,
    pairs: int = 10000,
    prompts: int = 512,
    eval_prompts: int = 192,
    size: int = 16,
    pretrain_mismatch: float = 0.3,
    model: bool = True,
) -> Path:
    """Write the task's files into ``out_dir`` (each written atomically) and return it:

    - ``pretrain.parquet``: ``caption``, ``jpg``: images for pretraining the model, a
      ``pretrain_mismatch`` share of them not matching their caption (wrong colour, shape or
      both: noisy captions, so the pretrained model makes mistakes that alignment can fix);
    - ``pairs.parquet``: the Pick-a-Pic layout ``caption``, ``jpg_0``, ``jpg_1``, ``label_0`` (1
      when image 0 matches the caption, 0 when image 1 does; the matching image sits at a random
      side) plus ``score_0``, ``score_1``: the :func:`image_reward` of each image;
    - ``prompts.txt``: training prompts for the methods that sample;
    - ``eval_prompts.txt``: evaluation prompts, :func:`eval_prompt_list`;
    - ``model/``: with ``model``, the untrained tiny text-to-image model (:func:`build_model`).

    The image columns are named ``jpg`` as in Pick-a-Pic but hold PNG bytes (lossless, so the
    reward of a decoded image is that of the drawn one). Every random choice comes from ``seed``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    task = ShapesTask(size, _stream(seed, "pretrain"))
    texts, noise = task.prompts(pretrain), random.Random(_stream(seed, "mismatch"))
    images = [task.pair(t)[1] if noise.random() < pretrain_mismatch else task.image(t) for t in texts]
    _write_parquet(out / "pretrain.parquet", {"caption": texts, "jpg": [png_bytes(image) for image in images]})

    task, sides = ShapesTask(size, _stream(seed, "pairs")), random.Random(_stream(seed, "sides"))
    rows: dict[str, list] = {"caption": [], "jpg_0": [], "jpg_1": [], "label_0": [], "score_0": [], "score_1": []}
    for text in task.prompts(pairs):
        winner, loser = task.pair(text)
        first_wins = sides.random() < 0.5
        images = (winner, loser) if first_wins else (loser, winner)
        rows["caption"].append(text)
        rows["label_0"].append(1.0 if first_wins else 0.0)
        for side, image in enumerate(images):
            rows[f"jpg_{side}"].append(png_bytes(image))
            rows[f"score_{side}"].append(image_reward(image, text))
    _write_parquet(out / "pairs.parquet", rows)

    for name, lines in (
        ("prompts.txt", ShapesTask(size, _stream(seed, "prompts")).prompts(prompts)),
        ("eval_prompts.txt", eval_prompt_list(eval_prompts)),
    ):
        _write_atomic(out / name, lambda tmp, lines=lines: tmp.write_text("".join(line + "\n" for line in lines)))
    if model:
        build_model(out / "model", size=size, seed=seed)
    return out


def write_model_pairs(
    pipeline: str | Path,
    out_file: str | Path,
    prompts: list[str],
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 3.0,
    batch_size: int = 64,
) -> Path:
    """Pairs in the Pick-a-Pic layout from a model's own samples, as Pick-a-Pic's are: two images
    per prompt (seeds ``seed + 2i`` and ``seed + 2i + 1``) from the text-to-image ``pipeline``,
    labelled by :func:`image_reward` (``label_0`` 1 or 0, 0.5 for a tie; ``score_0``/``score_1``
    the rewards). Written atomically to ``out_file``."""
    import torch

    from policylab.callbacks.images import to_uint8
    from policylab.nn.text_to_image import TextToImage

    model = TextToImage.from_pretrained(pipeline).eval()
    rows: dict[str, list] = {"caption": [], "jpg_0": [], "jpg_1": [], "label_0": [], "score_0": [], "score_1": []}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seeds = [seed + 2 * (start + i) + side for side in (0, 1) for i in range(len(chunk))]
        with torch.no_grad():
            images = to_uint8(model.sample(chunk + chunk, seeds, num_inference_steps, guidance_scale))
        for i, text in enumerate(chunk):
            first, second = images[i], images[len(chunk) + i]
            score_0, score_1 = image_reward(first, text), image_reward(second, text)
            rows["caption"].append(text)
            rows["jpg_0"].append(png_bytes(first))
            rows["jpg_1"].append(png_bytes(second))
            rows["label_0"].append(1.0 if score_0 > score_1 else 0.0 if score_0 < score_1 else 0.5)
            rows["score_0"].append(score_0)
            rows["score_1"].append(score_1)
    _write_parquet(Path(out_file), rows)
    return Path(out_file)


def build_model(directory: str | Path | None = None, size: int = 16, seed: int = 0):
    """The task's untrained text-to-image model (:func:`policylab.nn.text_to_image.build_tiny_text_to_image`
    over the caption words, pixel space ``size`` squared), saved as a diffusers pipeline folder
    to ``directory`` when given."""
    from policylab.nn.text_to_image import build_tiny_text_to_image

    return build_tiny_text_to_image(["a", *SHAPES, *COLORS], directory, image_size=size, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write the shapes task's data: pretraining images, image pairs, prompts."
    )
    parser.add_argument("--out", default="data/shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain", type=int, default=4000, help="rows of pretrain.parquet")
    parser.add_argument("--pairs", type=int, default=10000, help="rows of pairs.parquet")
    parser.add_argument("--prompts", type=int, default=512, help="lines of prompts.txt")
    parser.add_argument("--eval-prompts", type=int, default=192, help="lines of eval_prompts.txt")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels")
    parser.add_argument(
        "--pretrain-mismatch",
        type=float,
        default=0.3,
        help="share of pretraining images that do not match their caption",
    )
    parser.add_argument("--no-model", action="store_true", help="do not write the untrained model to <out>/model")
    parser.add_argument(
        "--pairs-from",
        metavar="PIPELINE",
        help="instead: write <out>/model_pairs.parquet from this model's "
        "samples for the prompts of <out>/prompts.txt (two per prompt, labelled by the reward)",
    )
    parser.add_argument("--repeat", type=int, default=4, help="with --pairs-from: pairs per prompt")
    args = parser.parse_args()
    if args.pairs_from:
        from policylab.datamodules.diffusion import PromptDataModule

        prompts = PromptDataModule.read(Path(args.out) / "prompts.txt") * args.repeat
        out = write_model_pairs(args.pairs_from, Path(args.out) / "model_pairs.parquet", prompts, seed=args.seed)
        print(f"wrote {out} ({len(prompts)} pairs, ties included)")
        return
    out = write_dataset(
        args.out,
        args.seed,
        args.pretrain,
        args.pairs,
        args.prompts,
        args.eval_prompts,
        args.size,
        args.pretrain_mismatch,
        model=not args.no_model,
    )
    print(
        f"wrote {out}/pretrain.parquet ({args.pretrain} rows), pairs.parquet ({args.pairs}), "
        f"prompts.txt ({args.prompts}), eval_prompts.txt ({args.eval_prompts})"
    )


if __name__ == "__main__":
    main()
