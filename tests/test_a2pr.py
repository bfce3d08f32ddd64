"""A2PR: its losses against hand-computed numbers, and learning on a toy task with mixed-quality data."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import expert_action

from policylab.datamodules import OfflineTransitionDataModule
from policylab.losses import a2pr_value_target, advantage_filtered_vae_loss, advantage_guided_bc_loss
from policylab.modules import A2PR


def test_value_target_is_the_smaller_of_the_two_targets():
    reward = torch.tensor([1.0, 0.0, 2.0])
    terminal = torch.tensor([0.0, 0.0, 1.0])
    next_q = torch.tensor([[4.0, -1.0, 9.0], [2.0, 3.0, 9.0]])
    critic_target = torch.tensor([2.5, 0.0, 5.0])
    # one-step targets with gamma 0.5: 1 + 0.5*2 = 2 ; 0 + 0.5*-1 = -0.5 ; terminal: 2
    # capped by y: min(2, 2.5) = 2 ; min(-0.5, 0) = -0.5 ; min(2, 5) = 2
    torch.testing.assert_close(
        a2pr_value_target(reward, terminal, next_q, critic_target, 0.5), torch.tensor([2.0, -0.5, 2.0])
    )


def test_vae_loss_counts_only_positive_advantage_actions():
    recon = torch.tensor([[0.5, 0.0], [1.0, 1.0]])
    action = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    mean = torch.tensor([[1.0], [0.0]])
    std = torch.tensor([[1.0], [math.exp(-1.0)]])
    q_data, value = torch.tensor([3.0, 1.0]), torch.tensor([2.0, 1.0])  # only row 0 has Q > V
    loss, recon_loss, kl = advantage_filtered_vae_loss(recon, action, mean, std, q_data, value, vae_weight=2.0)
    # recon: mean over 4 entries of 2 * [0.25, 0, 0 (masked), 0 (masked)] = 0.125
    assert math.isclose(recon_loss.item(), 0.125, rel_tol=1e-6)
    # KL per latent: row 0: -0.5*(1 + 0 - 1 - 1) = 0.5 ; row 1: -0.5*(1 - 2 - 0 - e^-2)
    kl_row1 = -0.5 * (1 - 2 - math.exp(-2.0))
    assert math.isclose(kl.item(), (0.5 + kl_row1) / 2, rel_tol=1e-6)
    assert math.isclose(loss.item(), 0.125 + 0.5 * (0.5 + kl_row1) / 2, rel_tol=1e-6)


def test_bc_target_and_weight_follow_the_advantages():
    pi = torch.tensor([[0.0], [0.0], [0.0]], requires_grad=True)
    data = torch.tensor([[1.0], [2.0], [3.0]])
    recon = torch.tensor([[-1.0], [-2.0], [-3.0]], requires_grad=True)
    value = torch.tensor([0.0, 0.0, 5.0])
    q_data = torch.tensor([1.0, 2.0, 1.0])
    q_recon = torch.tensor([3.0, 1.0, 2.0])
    # row 0: A_recon 3 >= A_data 1 -> target recon -1 ; weight mask*(1 + 1) = 0.8 ; term 0.8 * 1
    # row 1: A_recon 1 <  A_data 2 -> target data 2  ; weight mask*(1 + 1) = 0.8 ; term 0.8 * 4
    # row 2: A_recon -3 >= A_data -4 -> target recon -3 ; both below V -> weight 0 ; term 0
    loss = advantage_guided_bc_loss(pi, data, recon, q_data, q_recon, value, mask=0.4)
    assert math.isclose(loss.item(), (0.8 * 1 + 0.8 * 4 + 0) / 3, rel_tol=1e-6)
    loss.backward()
    # d/d recon_0 of 0.8*(pi - recon)^2 / 3 = -2*0.8*(0 - -1)/3 ; data-target rows pass nothing to recon
    torch.testing.assert_close(recon.grad, torch.tensor([[-1.6 / 3], [0.0], [0.0]]))


@pytest.fixture(scope="module")
def mixed_npz(tmp_path_factory):
    """Half the actions are the expert's (reward near 1), half uniform noise (reward far below):
    plain behaviour cloning would imitate the mixture; A2PR's advantage filter should not."""
    rng = np.random.default_rng(0)
    n = 20_000
    obs = rng.normal(size=(n, 6)).astype(np.float32)
    good = rng.random(n) < 0.5
    act = np.where(good[:, None], expert_action(obs) + 0.05 * rng.normal(size=(n, 2)), rng.uniform(-1, 1, size=(n, 2)))
    act = np.clip(act, -1, 1).astype(np.float32)
    reward = (1.0 - ((act - expert_action(obs)) ** 2).sum(1) * 2).astype(np.float32)
    path = tmp_path_factory.mktemp("mixed") / "mixed.npz"
    np.savez(
        path,
        observations=obs,
        actions=act,
        rewards=reward,
        next_observations=rng.normal(size=(n, 6)).astype(np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
    )
    return path


def test_a2pr_learns_the_good_half_of_mixed_data(mixed_npz):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(mixed_npz), batch_size=256, normalize_observations=False)
    model = A2PR(
        dm.obs_dim,
        dm.action_dim,
        dm.max_action,
        mask=0.4,
        discount=0.5,
        actor_hidden_dims=(64, 64),
        critic_hidden_dims=(64, 64),
        value_hidden_dims=(64, 64),
        vae_hidden_dims=(64, 64),
    )
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    expert = torch.as_tensor(expert_action(fixed.obs.numpy()))
    mixture_error = (fixed.action - expert).pow(2).mean().item()  # what imitating the data costs

    def imitation():
        with torch.no_grad():
            return (model.actor(fixed.obs) - expert).pow(2).mean().item()

    before = imitation()
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
    after = imitation()
    with torch.no_grad():
        q_data = model.critic(fixed.obs, fixed.action, members=1)[0]
        value = model.value(fixed.obs).squeeze(-1)
        good = (fixed.action - expert).pow(2).sum(1) < 0.05
    assert after < 0.1 * before and after < 0.2 * mixture_error, (before, after, mixture_error)
    # the advantage Q(s,a) - V(s) ranks the expert's actions above the noise
    assert (q_data - value)[good].mean() > (q_data - value)[~good].mean() + 0.2
