"""The shapes task for the diffusion methods: every drawn image earns its caption's full reward,
wrong attributes lose half each, and bad captions or images are named."""

import random

import numpy as np
import pytest

from policylab.tasks.shapes import COLORS, SHAPES, ShapesTask, caption, describe, draw, image_reward, parse_caption


@pytest.mark.parametrize("size", [32, 64])
def test_every_drawn_image_matches_its_caption(size):
    rng = random.Random(0)
    for _ in range(20):  # random sizes and positions
        for shape in SHAPES:
            for color in COLORS:
                image = draw(shape, color, size, rng)
                assert image.shape == (size, size, 3) and image.dtype == np.uint8
                assert describe(image) == (shape, color)
                assert image_reward(image, caption(shape, color)) == 1.0


def test_wrong_attributes_lose_half_each():
    image = draw("circle", "red", rng=random.Random(1))
    assert image_reward(image, "a red circle") == 1.0
    assert image_reward(image, "a blue circle") == 0.5
    assert image_reward(image, "a red square") == 0.5
    assert image_reward(image, "a green triangle") == 0.0
    blank = np.full((32, 32, 3), 245, dtype=np.uint8)
    assert image_reward(blank, "a red circle") == 0.0


def test_pairs_put_the_matching_image_first():
    task = ShapesTask(seed=3)
    for text in task.prompts(30):
        winner, loser = task.pair(text)
        assert image_reward(winner, text) == 1.0 and image_reward(loser, text) < 1.0
    assert ShapesTask(seed=3).prompts(5) == ShapesTask(seed=3).prompts(5)


def test_bad_captions_and_images_are_named():
    with pytest.raises(ValueError, match="'a purple circle'"):
        parse_caption("a purple circle")
    with pytest.raises(ValueError, match="one shape"):
        parse_caption("a red circle and a square")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        describe(np.zeros((32, 32)))


def test_the_reward_tolerates_mild_pixel_noise():
    """Generated images are noisy: with Gaussian noise of 8 levels per channel nearly every
    image still reads right."""
    rng, noise = random.Random(2), np.random.default_rng(2)
    scores = []
    for _ in range(10):
        for shape in SHAPES:
            for color in COLORS:
                image = draw(shape, color, 32, rng).astype(np.float32) + noise.normal(0, 8, (32, 32, 3))
                scores.append(image_reward(np.clip(image, 0, 255).astype(np.uint8), caption(shape, color)))
    assert np.mean(scores) > 0.95
