"""Does a trained negative model help as the unconditional branch of guidance on the shapes task?

    python benchmarks/negative_branch_probe.py \
        --pretrained data/bench/diffusion/runs/shapes_pretrain/version_0/pipeline \
        --checkpoints data/bench/diffusion/runs/self_npo_clip1_seed0/version_0/checkpoints/last.ckpt

The positive model is the pretrained one. For each checkpoint, ``delta`` is its UNet's weights
minus the pretrained ones, and the negative branch gets the pretrained weights plus one of:

- ``delta`` (what Self-NPO samples with);
- ``-delta`` (the mirror);
- a random change with the same norm as ``delta`` in every tensor.

Guidance is ``eps_neg(x, "") + w (eps_pos(x, caption) - eps_neg(x, ""))``. Each row prints the
reward and the shares of right shapes and colours, on the evaluation prompts and seeds, with 20
DDIM steps at guidance 3. The checkpoint may be of any diffusion module (``model.unet.*`` weights).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from policylab.callbacks import ImageRewardEvaluation
from policylab.modules.diffusion import SelfNPO
from policylab.tasks.shapes import describe, parse_caption


def evaluate(samples: ImageRewardEvaluation, module: SelfNPO) -> tuple[float, float, float]:
    """(reward, right shapes, right colours) of the evaluation's samples (its prompts and seeds)."""
    images = samples.images(module)
    reward = float(np.mean([samples.reward(image, prompt) for image, prompt in zip(images, samples.prompts)]))
    wanted = [parse_caption(p) for p in samples.prompts]
    seen = [describe(image) for image in images]
    shapes = float(np.mean([w[0] == s[0] for w, s in zip(wanted, seen)]))
    colours = float(np.mean([w[1] == s[1] for w, s in zip(wanted, seen)]))
    return reward, shapes, colours


def negative_variants(start: dict, trained: dict, generator: torch.Generator) -> dict[str, dict]:
    """The negative branch's weights: ``start + delta``, ``start - delta`` and ``start`` plus a
    random change with the norm of ``delta`` in each tensor, where ``delta = trained - start``
    (floating-point tensors only; the rest stay as in ``start``)."""
    delta = {k: trained[k] - v for k, v in start.items() if v.is_floating_point()}
    random = {}
    for k, d in delta.items():
        noise = torch.randn(d.shape, generator=generator)
        random[k] = noise * (d.norm() / noise.norm().clamp(min=1e-12))

    def plus(change: dict, sign: float = 1.0) -> dict:
        return {k: v + sign * change[k] if k in change else v for k, v in start.items()}

    return {
        "+ delta": plus(delta),
        "- delta (mirror)": plus(delta, -1.0),
        "+ random change, same norm per tensor": plus(random),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True, help="the pretrained pipeline folder (the positive model)")
    parser.add_argument(
        "--checkpoints", nargs="+", required=True, help="Lightning checkpoints whose UNet gives the direction"
    )
    parser.add_argument("--prompts", default="data/bench/diffusion/data/shapes/eval_prompts.txt")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples = ImageRewardEvaluation(
        args.prompts
    )  # the evaluation's sampling: 20 DDIM steps, guidance 3, prompt i from seed i
    module = SelfNPO(args.pretrained).eval()  # reference = positive model, model.unet = negative branch
    start = {k: v.clone() for k, v in module.reference.state_dict().items()}

    def row(label: str, negative: dict) -> None:
        module.model.unet.load_state_dict(negative)
        reward, shapes, colours = evaluate(samples, module)
        print(f"| {label} | {reward:.3f} | {shapes:.3f} | {colours:.3f} |", flush=True)

    print("| negative branch | reward | shape right | colour right |\n|---|---|---|---|")
    row("the pretrained UNet (plain guidance)", start)
    generator = torch.Generator().manual_seed(0)
    for path in args.checkpoints:
        weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        trained = {k.removeprefix("model.unet."): v for k, v in weights.items() if k.startswith("model.unet.")}
        change = sum((trained[k] - v).norm() ** 2 for k, v in start.items() if v.is_floating_point()).sqrt()
        change /= sum(v.norm() ** 2 for v in start.values() if v.is_floating_point()).sqrt()
        name = Path(path).parents[2].name
        print(f"| {name}: weights moved by {change:.2%} | | | |", flush=True)
        for label, negative in negative_variants(start, trained, generator).items():
            row(f"{name} {label}", negative)


if __name__ == "__main__":
    main()
