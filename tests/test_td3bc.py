"""TD3+BC learns on a tiny task where imitation is checkable; DDP on two CPU processes."""

import lightning as L
import pytest
import torch
from conftest import expert_action, quiet_trainer, write_expert_toy

from policylab.datamodules import OfflineTransitionDataModule
from policylab.modules.offline import TD3BC


@pytest.fixture(scope="module")
def toy_npz(tmp_path_factory):
    return write_expert_toy(tmp_path_factory.mktemp("toy") / "toy.npz", rows=20000)


def _module(dm):
    return TD3BC(
        dm.obs_dim, dm.action_dim, dm.max_action, discount=0.9, actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64)
    )


def test_td3bc_critic_loss_falls_and_actor_imitates(toy_npz):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(toy_npz), batch_size=256, normalize_observations=False)
    model = _module(dm)
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    expert = torch.as_tensor(expert_action(fixed.obs.numpy()))

    def measure():
        with torch.no_grad():
            return model.critic_loss(fixed)[0].item(), (model.actor(fixed.obs) - expert).pow(2).mean().item()

    critic_before, imitation_before = measure()
    quiet_trainer(max_steps=1500).fit(model, datamodule=dm)
    critic_after, imitation_after = measure()
    assert model.global_step == 1500
    assert critic_after < 0.5 * critic_before, (critic_before, critic_after)
    assert imitation_after < 0.1 * imitation_before and imitation_after < 0.02, (imitation_before, imitation_after)


def test_td3bc_validate_and_test_report_diagnostics(toy_npz):
    dm = OfflineTransitionDataModule(str(toy_npz), batch_size=128, val_batches=3)
    model = _module(dm)
    trainer = quiet_trainer(max_steps=5)
    (val,) = trainer.validate(model, datamodule=dm, verbose=False)
    (test,) = trainer.test(model, datamodule=dm, verbose=False)
    assert {"val/td_loss", "val/q_data", "val/q_policy", "val/action_mse"} <= set(val)
    assert "test/action_mse" in test


def test_non_finite_loss_stops_with_name(toy_npz):
    dm = OfflineTransitionDataModule(str(toy_npz), batch_size=64, reward_scale=float("inf"))
    model = _module(dm)
    with pytest.raises(FloatingPointError, match="critic_loss is .*nan|critic_loss is .*inf"):
        quiet_trainer(max_steps=10, log_every_n_steps=1).fit(model, datamodule=dm)


class _RecordRank(L.Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        torch.save(flat, f"{self.folder}/rank{trainer.global_rank}.pt")
        (self.folder / f"world{trainer.global_rank}").write_text(str(trainer.world_size))


@pytest.mark.slow
def test_td3bc_ddp_two_processes(toy_npz, tmp_path):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(toy_npz), batch_size=64)
    model = _module(dm)
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    trainer = quiet_trainer(
        max_steps=20, devices=2, strategy="ddp_spawn_find_unused_parameters_true", callbacks=[_RecordRank(tmp_path)]
    )
    trainer.fit(model, datamodule=dm)
    rank0, rank1 = (
        torch.load(tmp_path / "rank0.pt", weights_only=True),
        torch.load(tmp_path / "rank1.pt", weights_only=True),
    )
    assert (tmp_path / "world0").read_text() == (tmp_path / "world1").read_text() == "2"
    torch.testing.assert_close(rank0, rank1)  # gradients all-reduced: identical replicas
    assert not torch.allclose(rank0, before)  # and they trained
