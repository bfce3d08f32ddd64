"""Evaluation of text-to-image runs: a programmatic reward of sampled images, the win rate
against the starting model on the same prompts and seeds, and image grids in TensorBoard."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from policylab.callbacks.generation import ScoredEvaluation, import_object
from policylab.datamodules.diffusion import PromptDataModule


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, C, H, W]`` in ``[-1, 1]`` -> ``[N, H, W, C]`` uint8."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def image_grid(images: np.ndarray, columns: int = 8, upscale: int = 1) -> np.ndarray:
    """``[N, H, W, C]`` uint8 images tiled row by row (white 1-pixel gaps) into one ``[H', W', C]``
    image, each enlarged ``upscale`` times (nearest neighbour)."""
    n, h, w, c = images.shape
    images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    h, w = h * upscale, w * upscale
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = image
    return grid


class ImageRewardEvaluation(ScoredEvaluation):
    """Every ``every_n_steps`` training steps (and once in ``validate``/``test``), sample one image
    per prompt of ``prompts_file`` with the module's ``sample`` (image ``i`` from seed
    ``seed + i``, so evaluations compare like with like), score each with ``reward(image,
    prompt)`` (a dotted path; the image an ``[H, W, 3]`` uint8 array; default the shapes task's)
    and log ``eval/reward`` (mean), ``eval/reward_std`` and ``eval/win_rate`` (against the images
    of the model at fit start, ties counting half; that model's reward is ``eval/reward_start``).
    The first ``grid_size`` images go to every
    TensorBoard logger as ``eval/samples`` (and ``eval/samples_start`` at fit start, the
    before-and-after pair). ``limit`` keeps the first prompts only. ``clip_model`` (a local CLIP
    model folder) adds ``eval/clip_score`` (:class:`policylab.metrics.CLIPScore`). The prompts
    file is ``.txt`` or ``.jsonl``, as :class:`~policylab.datamodules.PromptDataModule` reads."""

    metric = "eval/reward"

    def __init__(
        self,
        prompts_file: str,
        reward: str = "policylab.tasks.shapes.image_reward",
        every_n_steps: int = 200,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        seed: int = 0,
        batch_size: int = 64,
        grid_size: int = 32,
        grid_upscale: int = 4,
        limit: int | None = None,
        clip_model: str | None = None,
    ) -> None:
        super().__init__(every_n_steps)
        self.prompts = PromptDataModule.read(prompts_file)[:limit]
        self.clip_score = None
        if clip_model is not None:
            from policylab.metrics import CLIPScore

            self.clip_score = CLIPScore(clip_model)
        self.reward = import_object(reward)
        self.num_inference_steps, self.guidance_scale = num_inference_steps, guidance_scale
        self.seed, self.batch_size, self.grid_size, self.grid_upscale = seed, batch_size, grid_size, grid_upscale
        self.last_clip_score: float | None = None

    @torch.no_grad()
    def images(self, pl_module: L.LightningModule) -> np.ndarray:
        was_training = pl_module.training
        pl_module.eval()
        try:
            out = []
            for start in range(0, len(self.prompts), self.batch_size):
                prompts = self.prompts[start : start + self.batch_size]
                seeds = [self.seed + start + i for i in range(len(prompts))]
                out.append(to_uint8(pl_module.sample(prompts, seeds, self.num_inference_steps, self.guidance_scale)))
        finally:
            pl_module.train(was_training)
        return np.concatenate(out)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str = "eval/samples") -> torch.Tensor:
        """Reward of each prompt's image; the grid logged under ``tag``."""
        images = self.images(pl_module)
        scores = torch.tensor([float(self.reward(image, prompt)) for image, prompt in zip(images, self.prompts)])
        if self.clip_score is not None:
            self.clip_score.reset()
            self.clip_score.update(torch.from_numpy(images).permute(0, 3, 1, 2), self.prompts)
            self.last_clip_score = self.clip_score.compute().item()
        self.log_grid(trainer, images[: self.grid_size], tag)
        return scores

    def log_grid(self, trainer: L.Trainer, images: np.ndarray, tag: str) -> None:
        if not self.grid_size or not len(images):
            return
        grid = image_grid(images, columns=8, upscale=self.grid_upscale)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(tag, grid, global_step=trainer.global_step, dataformats="HWC")

    def step_metrics(self, scores: torch.Tensor) -> dict[str, float]:
        metrics = {**super().step_metrics(scores), "eval/reward_std": scores.std().item() if len(scores) > 1 else 0.0}
        if self.clip_score is not None:
            metrics["eval/clip_score"] = self.last_clip_score
        return metrics

    def evaluate_start(self, trainer, pl_module) -> torch.Tensor:
        """The start scores, with their grid (``eval/samples_start``) and mean (``eval/reward_start``)."""
        scores = self.evaluate(trainer, pl_module, "eval/samples_start")
        for logger in trainer.loggers:  # the starting reward, at the step training starts from
            logger.log_metrics({"eval/reward_start": scores.mean().item()}, step=trainer.global_step)
        return scores
