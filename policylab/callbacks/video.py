"""Rollout videos of the current policy in TensorBoard."""

from __future__ import annotations

import io

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from policylab.envs.make import make_env


def encode_gif(frames: list[np.ndarray], fps: int) -> bytes:
    """Animated GIF of ``[H, W, 3]`` uint8 frames (what TensorBoard's image tab plays)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0
    )
    return buffer.getvalue()


def log_gif(trainer: L.Trainer, tag: str, gif: bytes, height: int, width: int, step: int) -> bool:
    """Write an animated GIF to every TensorBoard logger of ``trainer``; False when there is none."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(
        value=[
            Summary.Value(
                tag=tag, image=Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
            )
        ]
    )
    written = False
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment._get_file_writer().add_summary(summary, global_step=step)
            written = True
    return written


class RolloutVideo(Callback):
    """Every ``every_n_steps`` training steps, roll out the current deterministic policy for one
    episode (at most ``max_frames`` rendered frames, every ``frame_skip``-th step), and log it to
    TensorBoard as ``video/rollout`` (an animated GIF in the Images tab). ``every_n_steps: 0``
    switches it off. MuJoCo renders offscreen (policylab selects ``MUJOCO_GL=egl`` on machines
    without a display); a rendering failure is reported once and the callback disables itself.
    """

    def __init__(
        self,
        every_n_steps: int = 25_000,
        max_frames: int = 200,
        frame_skip: int = 2,
        width: int = 160,
        height: int = 160,
        fps: int = 25,
        seed: int = 20_000,
        env_id: str | None = None,
    ) -> None:
        super().__init__()
        if every_n_steps < 0 or max_frames <= 0 or frame_skip <= 0:
            raise ValueError(
                "RolloutVideo needs every_n_steps >= 0, max_frames > 0, frame_skip > 0; "
                f"got {every_n_steps}, {max_frames}, {frame_skip}"
            )
        self.every_n_steps, self.max_frames, self.frame_skip = every_n_steps, max_frames, frame_skip
        self.width, self.height, self.fps, self.seed, self.env_id = width, height, fps, seed, env_id

    @torch.no_grad()
    def render_episode(self, pl_module: L.LightningModule, env_id: str) -> list[np.ndarray]:
        normalizer = pl_module.obs_normalizer
        env = make_env(
            env_id,
            normalizer.mean.cpu().numpy(),
            normalizer.std.cpu().numpy(),
            render_mode="rgb_array",
            width=self.width,
            height=self.height,
        )
        try:
            obs, _ = env.reset(seed=self.seed)
            frames, step, done = [env.render()], 0, False
            while not done and len(frames) < self.max_frames:
                obs, _, terminated, truncated, _ = env.step(pl_module.act(obs[None])[0])
                done, step = terminated or truncated, step + 1
                if step % self.frame_skip == 0 or done:
                    frames.append(env.render())
            return frames
        finally:
            env.close()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self.every_n_steps or trainer.global_step % self.every_n_steps != 0 or trainer.global_rank != 0:
            return
        env_id = self.env_id or getattr(trainer.datamodule, "env_id", None)
        if env_id is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            frames = self.render_episode(pl_module, env_id)
        except Exception as err:  # no GL backend on this machine: say so once and stop trying
            pl_module.print(
                f"RolloutVideo: rendering {env_id} failed ({type(err).__name__}: {err}); videos are off for this run"
            )
            self.every_n_steps = 0
            return
        finally:
            pl_module.train(was_training)
        log_gif(trainer, "video/rollout", encode_gif(frames, self.fps), self.height, self.width, trainer.global_step)
