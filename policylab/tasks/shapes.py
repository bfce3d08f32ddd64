"""A synthetic text-to-image task with ground truth, for the diffusion methods: coloured shapes
on a light background, described by captions such as ``"a red circle"``, and a programmatic
reward that checks an image against its caption.

:func:`draw` renders a shape (random size and position, fully inside the canvas);
:func:`image_reward` finds the foreground (pixels far from the background), names its colour
by the nearest palette entry and its shape by how much of its bounding box it fills (square
about 1, circle about pi/4, triangle about 1/2), and scores 0.5 per attribute that matches the
caption. Every random choice comes from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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
        pen.polygon([(x0, y0 + side - 1), (x0 + side - 1, y0 + side - 1), (x0 + (side - 1) / 2, y0)], fill=COLORS[color])
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
