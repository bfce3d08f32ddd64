"""IQL: its losses against hand-computed numbers, and learning on a toy task with mixed-quality data."""

import math

import lightning as L
import numpy as np
import pytest
import torch

from policylab.datamodules import OfflineTransitionDataModule
from policylab.losses import awr_actor_loss, awr_weights, expectile_loss, iql_q_target
from policylab.modules import IQL
from policylab.nn import GaussianActor


def test_expectile_loss_by_hand():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])
    # tau 0.7: positive residuals weigh 0.7, negative ones 0.3
    expected = (0.7 * 4 + 0.3 * 1 + 0.7 * 0.25 + 0.3 * 9) / 4
    assert math.isclose(expectile_loss(diff, 0.7).item(), expected, rel_tol=1e-6)
    # tau 0.5 is half the mean squared error
    assert math.isclose(expectile_loss(diff, 0.5).item(), 0.5 * diff.pow(2).mean().item(), rel_tol=1e-6)


def test_expectile_regression_finds_the_expectile():
    """Minimizing the loss over a constant recovers the tau-expectile, computed independently by
    solving tau * E[(x - m)+] = (1 - tau) * E[(m - x)+] with bisection."""
    x = torch.tensor([0.0, 1.0, 2.0, 10.0])
    m = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([m], lr=0.1)
    for _ in range(3000):
        opt.zero_grad()
        expectile_loss(x - m, 0.9).backward()
        opt.step()
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        balance = 0.9 * (x - mid).clamp(min=0).sum() - 0.1 * (mid - x).clamp(min=0).sum()
        lo, hi = (mid, hi) if balance > 0 else (lo, mid)
    assert math.isclose(m.item(), lo, abs_tol=1e-3)


def test_q_target_and_awr_by_hand():
    target = iql_q_target(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), torch.tensor([3.0, 5.0]), 0.9)
    torch.testing.assert_close(target, torch.tensor([1.0 + 2.7, 2.0]))
    advantage = torch.tensor([0.0, 1.0, 5.0])
    torch.testing.assert_close(awr_weights(advantage, beta=1.0, max_weight=100.0), torch.tensor([1.0, math.e, 100.0]))
    log_prob = torch.tensor([-1.0, -2.0, 0.5])
    assert math.isclose(awr_actor_loss(log_prob, advantage, 1.0).item(), -(-1.0 - 2 * math.e + 50.0) / 3, rel_tol=1e-6)


def test_gaussian_actor_log_prob_matches_the_normal_density():
    actor = GaussianActor(3, 2, max_action=1.0, hidden_dims=(8,))
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([0.0, math.log(2.0)]))
    obs, action = torch.randn(4, 3), torch.rand(4, 2) * 2 - 1
    mean = actor.mean(obs)
    by_hand = (
        -0.5 * ((action - mean) / torch.tensor([1.0, 2.0])).pow(2)
        - torch.log(torch.tensor([1.0, 2.0]))
        - 0.5 * math.log(2 * math.pi)
    )
    torch.testing.assert_close(actor.log_prob(obs, action), by_hand.sum(-1))


def _expert(obs: np.ndarray) -> np.ndarray:
    return np.tanh(obs[:, :2] - 0.5 * obs[:, 2:4])


@pytest.mark.parametrize("deterministic_actor", [False, True], ids=["gaussian", "deterministic"])
def test_iql_learns_the_good_half_of_mixed_data(tmp_path, deterministic_actor):
    rng = np.random.default_rng(1)
    n = 20_000
    obs = rng.normal(size=(n, 6)).astype(np.float32)
    good = rng.random(n) < 0.5
    act = np.clip(
        np.where(good[:, None], _expert(obs) + 0.05 * rng.normal(size=(n, 2)), rng.uniform(-1, 1, size=(n, 2))), -1, 1
    )
    reward = 1.0 - ((act - _expert(obs)) ** 2).sum(1) * 2
    path = tmp_path / "mixed.npz"
    np.savez(
        path,
        observations=obs,
        actions=act.astype(np.float32),
        rewards=reward.astype(np.float32),
        next_observations=rng.normal(size=(n, 6)).astype(np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
    )
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(path), batch_size=256, normalize_observations=False)
    model = IQL(
        dm.obs_dim,
        dm.action_dim,
        dm.max_action,
        discount=0.5,
        actor_hidden_dims=(64, 64),
        critic_hidden_dims=(64, 64),
        value_hidden_dims=(64, 64),
        actor_lr_decay_steps=None,
        deterministic_actor=deterministic_actor,
    )
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    expert = torch.as_tensor(_expert(fixed.obs.numpy()))
    mixture_error = (fixed.action - expert).pow(2).mean().item()
    with torch.no_grad():
        before = (model.policy_action(fixed.obs) - expert).pow(2).mean().item()
    trainer = L.Trainer(
        max_steps=1500,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    with torch.no_grad():
        after = (model.policy_action(fixed.obs) - expert).pow(2).mean().item()
    assert after < 0.2 * before and after < 0.25 * mixture_error, (before, after, mixture_error)
