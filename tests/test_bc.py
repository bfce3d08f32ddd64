"""BC and %BC: the losses by hand, the trajectory filter on a hand-built dataset, and learning on a
toy task where the best trajectories are the expert's."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import expert_action, quiet_trainer

from policylab.datamodules import OfflineTransitionDataModule
from policylab.losses import bc_mse_loss, weighted_bc_loss
from policylab.modules import BC
from policylab.modules.offline.bc import top_trajectory_rows


def test_bc_losses_by_hand():
    pi = torch.tensor([[0.5, 0.0], [1.0, -1.0]])
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # squared errors: row 0 (0.25, 0), row 1 (0, 4)
    assert math.isclose(bc_mse_loss(pi, a).item(), (0.25 + 0 + 0 + 4) / 4, rel_tol=1e-6)
    # per-row sums 0.25 and 4, weighted 2 and 0.5: mean(0.5, 2)
    assert math.isclose(weighted_bc_loss(pi, a, torch.tensor([2.0, 0.5])).item(), 1.25, rel_tol=1e-6)


def test_weighted_bc_loss_does_not_differentiate_the_weights():
    pi = torch.tensor([[1.0]], requires_grad=True)
    weight = torch.tensor([3.0], requires_grad=True)
    weighted_bc_loss(pi, torch.zeros(1, 1), weight).backward()
    assert weight.grad is None and math.isclose(pi.grad.item(), 2 * 3.0 * 1.0, rel_tol=1e-6)


def _rows():
    """Four trajectories; observation i is the number i, so next_obs = i + 1 inside a trajectory.

    T0 rows 0-2, rewards 1 1 1, ends with a terminal      -> return 3 (discount 0.5: 1.75)
    T1 rows 3-4, rewards 5 0,   ends with a timeout       -> return 5 (5)
    T2 rows 5-7, rewards 0 0 4, ends where next_obs jumps -> return 4 (1)
    T3 rows 8-9, rewards 2 2,   ends with the data        -> return 4 (3)
    """
    obs = torch.arange(10.0).unsqueeze(1)
    next_obs = obs + 1
    next_obs[7] = 100.0  # the episode's time-limit row was dropped: the next row starts another
    reward = torch.tensor([1.0, 1, 1, 5, 0, 0, 0, 4, 2, 2])
    terminal = torch.zeros(10)
    terminal[2] = 1
    timeout = torch.zeros(10)
    timeout[4] = 1
    return obs, next_obs, reward, terminal, timeout


def test_top_trajectory_rows_by_hand():
    rows = _rows()
    # top 2 of 4 by return: T1 (5), then T2 and T3 tie at 4 and the earlier one is kept
    assert top_trajectory_rows(*rows, top_fraction=0.5).tolist() == [3, 4, 5, 6, 7]
    # discounted with 0.5 the order is T1 (5), T3 (3), T0 (1.75), T2 (1)
    assert top_trajectory_rows(*rows, top_fraction=0.5, return_discount=0.5).tolist() == [3, 4, 8, 9]
    # at least one trajectory, however small the fraction (CORL's max(1, int(frac * N)))
    assert top_trajectory_rows(*rows, top_fraction=0.1).tolist() == [3, 4]
    assert top_trajectory_rows(*rows, top_fraction=1.0).tolist() == list(range(10))


@pytest.fixture(scope="module")
def mixed_trajectories(tmp_path_factory):
    """80 trajectories of 100 steps ending in timeouts: the even ones follow the expert (return
    near 100), the odd ones act uniformly at random (return far below)."""
    rng = np.random.default_rng(0)
    count, length = 80, 100
    obs = rng.normal(size=(count, length + 1, 6)).astype(np.float32)
    expert = expert_action(obs[:, :-1].reshape(-1, 6)).reshape(count, length, 2)
    good = (np.arange(count) % 2 == 0)[:, None, None]
    act = np.where(good, expert + 0.05 * rng.normal(size=expert.shape), rng.uniform(-1, 1, size=expert.shape))
    act = np.clip(act, -1, 1).astype(np.float32)
    reward = 1.0 - 2 * ((act - expert) ** 2).sum(-1)
    timeouts = np.zeros((count, length), bool)
    timeouts[:, -1] = True
    path = tmp_path_factory.mktemp("bc") / "mixed.npz"
    np.savez(
        path,
        observations=obs[:, :-1].reshape(-1, 6),
        next_observations=obs[:, 1:].reshape(-1, 6),
        actions=act.reshape(-1, 2),
        rewards=reward.reshape(-1).astype(np.float32),
        terminals=np.zeros(count * length, bool),
        timeouts=timeouts.reshape(-1),
    )
    return path, np.repeat(good.reshape(-1), length)


def _imitation_error(model, obs: torch.Tensor, expert: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.actor(obs) - expert).pow(2).mean().item()


def test_percent_bc_keeps_the_best_trajectories_and_imitates_them(mixed_trajectories):
    path, good = mixed_trajectories
    L.seed_everything(0)
    data = OfflineTransitionDataModule(str(path), batch_size=256, normalize_observations=False).load()
    obs = data.buffer.all().obs.clone()
    expert = torch.as_tensor(expert_action(obs.numpy()))
    top = BC(data.obs_dim, data.action_dim, data.max_action, top_fraction=0.5, actor_hidden_dims=(64, 64))
    before = _imitation_error(top, obs, expert)
    quiet_trainer(limit_val_batches=0, max_steps=600).fit(top, datamodule=data)
    # the filter kept exactly the expert's 40 trajectories, in data order
    kept = data.buffer.all()
    assert len(data.buffer) == good.sum() == 4000
    torch.testing.assert_close(kept.obs, obs[torch.as_tensor(good)], rtol=0, atol=0)
    top_error = _imitation_error(top, obs, expert)

    L.seed_everything(0)
    everything = OfflineTransitionDataModule(str(path), batch_size=256, normalize_observations=False)
    plain = BC(everything.obs_dim, everything.action_dim, everything.max_action, actor_hidden_dims=(64, 64))
    quiet_trainer(limit_val_batches=0, max_steps=600).fit(plain, datamodule=everything)
    assert len(everything.buffer) == 8000  # plain BC trains on all of it
    plain_error = _imitation_error(plain, obs, expert)
    assert top_error < 0.02 * before and top_error < 0.1 * plain_error, (before, top_error, plain_error)


def test_bc_regresses_to_the_mean_action_of_the_data(mixed_trajectories):
    """Half the actions are the expert's, half uniform on [-1, 1] (mean 0): plain BC's best fit is
    0.5 * expert(s), and the logged action error to the dataset falls towards its floor."""
    path, _ = mixed_trajectories
    L.seed_everything(0)
    data = OfflineTransitionDataModule(str(path), batch_size=256, val_batches=2, normalize_observations=False)
    model = BC(data.obs_dim, data.action_dim, data.max_action, actor_hidden_dims=(64, 64))
    obs = data.load().buffer.all().obs
    mean_action = 0.5 * torch.as_tensor(expert_action(obs.numpy()))
    trainer = L.Trainer(max_steps=600, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    (before,) = trainer.validate(model, datamodule=data, verbose=False)
    error_before = _imitation_error(model, obs, mean_action)
    trainer.fit(model, datamodule=data)
    (after,) = trainer.validate(model, datamodule=data, verbose=False)
    error_after = _imitation_error(model, obs, mean_action)
    assert error_after < 0.1 * error_before, (error_before, error_after)
    assert after["val/action_mse"] < 0.75 * before["val/action_mse"], (before, after)


def test_the_filter_runs_once_per_buffer(mixed_trajectories):
    path, _ = mixed_trajectories
    data = OfflineTransitionDataModule(str(path), batch_size=64, normalize_observations=False)
    model = BC(data.obs_dim, data.action_dim, data.max_action, top_fraction=0.25, actor_hidden_dims=(8,))
    quiet_trainer(limit_val_batches=0, max_steps=2).fit(model, datamodule=data)
    assert len(data.buffer) == 20 * 100
    L.Trainer(logger=False, enable_progress_bar=False).validate(model, datamodule=data, verbose=False)
    assert len(data.buffer) == 20 * 100  # set up again: not the top quarter of the top quarter
    other = BC(data.obs_dim, data.action_dim, data.max_action, top_fraction=0.5, actor_hidden_dims=(8,))
    with pytest.raises(ValueError, match="already filtered"):
        quiet_trainer(limit_val_batches=0, max_steps=2).fit(other, datamodule=data)


def test_bad_fraction_and_a_counted_optimizer_that_does_not_exist_are_refused(mixed_trajectories):
    with pytest.raises(ValueError, match="top_fraction"):
        BC(6, 2, top_fraction=0.0)

    class Misnamed(BC):
        counted_optimizer = "critic"

    path, _ = mixed_trajectories
    data = OfflineTransitionDataModule(str(path), batch_size=64)
    with pytest.raises(ValueError, match="counted_optimizer is 'critic', not one of its optimizers \\['actor'\\]"):
        quiet_trainer(limit_val_batches=0, max_steps=2).fit(
            Misnamed(data.obs_dim, data.action_dim, actor_hidden_dims=(8,)), datamodule=data
        )
