"""compile=True and cuda_graph=True change the speed of an update, never its numbers."""

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from policylab.datamodules import OfflineTransitionDataModule
from policylab.modules import A2PR, TD3BC


class _Losses(Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        self.values.append((float(metrics["train/critic_loss"]), float(metrics.get("train/actor_loss", float("nan")))))


def _losses(path, compile: bool = False, method=TD3BC, accelerator: str = "cpu", steps: int = 100, **kwargs):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(path), batch_size=64, seed=0)
    model = method(dm.obs_dim, dm.action_dim, dm.max_action, compile=compile, **kwargs)
    record = _Losses()
    L.Trainer(
        max_steps=steps,
        log_every_n_steps=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[record],
        accelerator=accelerator,
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(model, dm)
    if compile:  # the losses really ran compiled
        assert model._compiled and torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    return np.array(record.values)


@pytest.mark.timeout(600)
def test_compiled_and_eager_td3bc_give_the_same_losses_for_40_steps(hopper_hdf5):
    """Compiling costs the time here, not the steps: 40 steps (20 actor updates) check what 100 did."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(fallback_random=True):  # the same random stream as eager
        compiled = _losses(hopper_hdf5, compile=True, steps=40)
    eager = _losses(hopper_hdf5, compile=False, steps=40)
    assert compiled.shape == eager.shape == (40, 2)
    np.testing.assert_allclose(compiled[:, 0], eager[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(compiled[1::2, 1], eager[1::2, 1], rtol=1e-4, atol=1e-5)


SMALL = {
    TD3BC: {"actor_hidden_dims": (32, 32), "critic_hidden_dims": (32, 32)},
    A2PR: {
        "actor_hidden_dims": (32, 32),
        "critic_hidden_dims": (32, 32),
        "value_hidden_dims": (32, 32),
        "vae_hidden_dims": (32, 32),
    },
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("method", [TD3BC, A2PR])
def test_cuda_graph_and_eager_give_the_same_losses_for_100_steps(hopper_hdf5, method):
    graphed = _losses(hopper_hdf5, method=method, accelerator="gpu", cuda_graph=True, **SMALL[method])
    eager = _losses(hopper_hdf5, method=method, accelerator="gpu", **SMALL[method])
    assert graphed.shape == eager.shape == (100, 2)
    np.testing.assert_allclose(graphed[:, 0], eager[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(graphed[1::2, 1], eager[1::2, 1], rtol=1e-4, atol=1e-5)


def test_cuda_graph_is_ignored_on_a_cpu(hopper_hdf5):
    np.testing.assert_array_equal(_losses(hopper_hdf5, cuda_graph=True, steps=20), _losses(hopper_hdf5, steps=20))


def test_recorded_graphs_are_forgotten_when_a_number_the_update_reads_changes():
    """A2PR changes alpha and mask when finetuning starts; graphs recorded with the old numbers must go,
    while Lightning switching train/eval mode keeps them."""
    model = A2PR(11, 3, **SMALL[A2PR])
    model._graphs[(True, True)] = ("graph", (), {})  # as _graphed_update stores a recording
    model.train(False)
    model.train(True)
    assert model._graphs
    model.on_online_start()  # alpha and mask assigned again
    assert not model._graphs


def test_compile_and_cuda_graph_together_are_refused():
    with pytest.raises(ValueError, match="compile=True and cuda_graph=True"):
        TD3BC(11, 3, compile=True, cuda_graph=True)


def test_cuda_graph_falls_back_to_eager_in_mixed_precision_with_a_warning(hopper_hdf5):
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=32, seed=0)
    model = TD3BC(
        dm.obs_dim,
        dm.action_dim,
        dm.max_action,
        actor_hidden_dims=(16, 16),
        critic_hidden_dims=(16, 16),
        cuda_graph=True,
    )
    trainer = L.Trainer(
        max_steps=3,
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with pytest.warns(UserWarning, match="runs eagerly"):
        trainer.fit(model, dm)
    assert trainer.global_step == 3 and not model._use_cuda_graphs


class _WatchesBackward(_Losses):
    """Overrides a backward hook, which sends every step through Lightning's wrappers."""

    def on_after_backward(self, trainer, pl_module):
        pass


@pytest.mark.parametrize("method", [TD3BC, A2PR])
def test_direct_steps_give_the_numbers_of_lightnings_wrapped_steps(hopper_hdf5, method):
    def run(record):
        L.seed_everything(0)
        dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=64, seed=0)
        model = method(dm.obs_dim, dm.action_dim, dm.max_action, **SMALL[method])
        trainer = L.Trainer(
            max_steps=60,
            log_every_n_steps=1,
            logger=False,
            enable_checkpointing=False,
            callbacks=[record],
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(model, dm)
        return model._direct_steps, trainer.global_step, np.array(record.values)

    direct, steps, direct_losses = run(_Losses())
    wrapped, wrapped_steps, wrapped_losses = run(_WatchesBackward())
    assert direct and not wrapped and steps == wrapped_steps == 60
    np.testing.assert_array_equal(direct_losses, wrapped_losses)


def test_a_checkpoint_written_with_cuda_graphs_resumes_on_a_cpu(hopper_hdf5, tmp_path):
    """A graph run leaves Adam in "capturable" mode, which is CUDA-only; resuming elsewhere drops it."""
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=32, seed=0)
    model = TD3BC(dm.obs_dim, dm.action_dim, dm.max_action, actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16))
    trainer = L.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["capturable"] = True  # as _graphed_update leaves them on a GPU
    trainer.save_checkpoint(tmp_path / "graphs.ckpt")
    resumed = L.Trainer(
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    resumed.fit(
        TD3BC(dm.obs_dim, dm.action_dim, dm.max_action, actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16)),
        dm,
        ckpt_path=tmp_path / "graphs.ckpt",
    )
    assert resumed.global_step == 8
    assert not any(g["capturable"] for o in resumed.optimizers for g in o.param_groups)
