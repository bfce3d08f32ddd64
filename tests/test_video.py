"""Rollout videos land in TensorBoard as animated GIFs."""

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from policylab.callbacks import RolloutVideo
from policylab.datamodules import OfflineTransitionDataModule
from policylab.modules import TD3BC


def test_rollout_video_is_an_animated_gif_in_tensorboard(tmp_path, hopper_hdf5):
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=64)
    model = TD3BC(dm.obs_dim, dm.action_dim, dm.max_action, actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32))
    video = RolloutVideo(every_n_steps=20, max_frames=12, width=64, height=48)
    trainer = L.Trainer(
        max_steps=40,
        logger=TensorBoardLogger(tmp_path, name="video"),
        callbacks=[video],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    assert video.every_n_steps == 20, "rendering failed on this machine"
    events = EventAccumulator(str(tmp_path / "video/version_0"), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("video/rollout")
    assert [image.step for image in images] == [20, 40]
    assert images[0].encoded_image_string[:6] in (b"GIF87a", b"GIF89a")
    assert (images[0].width, images[0].height) == (64, 48)
