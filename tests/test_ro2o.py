"""RO2O: its regularizers against hand-computed numbers, the alpha_u schedule, the online switch,
and learning on the toy task of tests/test_td3bc.py."""

import math

import lightning as L
import pytest
import torch
from conftest import expert_action, quiet_trainer, write_expert_toy
from torch.distributions import Normal, kl_divergence

from policylab.datamodules import OfflineTransitionDataModule, TransitionBatch
from policylab.losses import (
    decayed_uncertainty_weight,
    ood_uncertainty_loss,
    perturbed_states,
    policy_smoothness_loss,
    q_smoothness_loss,
    symmetric_gaussian_kl,
    uniform_perturbations,
)
from policylab.modules.offline import RO2O


# ----------------------------------------------------------------------------- the math by hand
def test_perturbed_states_layout_by_hand():
    obs = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    deltas = torch.tensor([[0.1, -0.1], [0.2, 0.0]])
    expected = torch.tensor([[0.1, -0.1], [0.2, 0.0], [1.1, 1.9], [1.2, 2.0]])
    torch.testing.assert_close(perturbed_states(obs, deltas), expected)


def test_uniform_perturbations_stay_in_the_box_and_fill_it():
    d = uniform_perturbations(2000, 3, 0.01, torch.zeros(1), torch.Generator().manual_seed(0))
    assert d.shape == (2000, 3)
    assert d.abs().max() <= 0.01
    assert d.max() > 0.0099 and d.min() < -0.0099  # U[-eps, eps], not a sphere or a normal
    assert abs(d.mean().item()) < 5e-4


def test_q_smoothness_loss_by_hand():
    # E=2 members, B=2 states, n=2 copies; Q(s, a): member 0 [1, 0], member 1 [2, 0]
    q_clean = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    q_pert = torch.tensor([[1.5, 0.0, 0.0, -0.5], [2.0, 3.0, 0.0, 0.0]])
    # state 0: diffs m0 (+0.5, -1), m1 (0, +1) -> (0.8*.25, 0.2*1), (0, 0.8*1) -> copies (0.1, 0.5) -> 0.5
    # state 1: diffs m0 (0, -0.5), m1 (0, 0)  -> (0, 0.2*.25), (0, 0)       -> copies (0, 0.025) -> 0.025
    loss = q_smoothness_loss(q_pert, q_clean, tau=0.2)
    assert loss.item() == pytest.approx((0.5 + 0.025) / 2)
    loss.backward()  # the clean Q is not detached: the worst copy of state 0 pulls both members
    # d/dQ_clean of mean_b mean_i f(D): state 0 copy 1: m0 D=-1 -> -(2*0.2*-1)/2/2 = 0.1; m1 D=1 -> -(2*0.8)/4 = -0.4
    torch.testing.assert_close(q_clean.grad, torch.tensor([[0.1, 0.2 * 0.5 / 2], [-0.4, 0.0]]))


def test_ood_uncertainty_loss_value_and_gradient_by_hand():
    q = torch.tensor([[1.0, 3.0], [3.0, 3.0]], requires_grad=True)  # [E=2, M=2]
    # column 0: unbiased std sqrt(2); column 1: 0. Value = mean over E, M of (0.5 * std)^2 = (0.5 + 0.5) / 4
    loss = ood_uncertainty_loss(q, 0.5)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()  # the target is a constant: each member is pushed down by alpha_u * std
    g = math.sqrt(2) / 4  # 2 * 0.5 * sqrt(2) / (E * M)
    torch.testing.assert_close(q.grad, torch.tensor([[g, 0.0], [g, 0.0]]))


def test_decayed_uncertainty_weight_floors_at_the_minimum():
    assert decayed_uncertainty_weight(torch.tensor(1.0), 0.3, 0.1).item() == pytest.approx(0.7)
    assert decayed_uncertainty_weight(torch.tensor(0.15), 0.1, 0.1).item() == pytest.approx(0.1)


def test_symmetric_kl_by_hand_and_against_torch():
    # N(0, 1) vs N(1, 2^2): (1 + 1) / 8 + (4 + 1) / 2 - 1 = 1.75
    value = symmetric_gaussian_kl(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.tensor([math.log(2.0)]))
    assert value.item() == pytest.approx(1.75)
    g = torch.Generator().manual_seed(0)
    m1, m2, l1, l2 = (torch.randn(4, 3, generator=g) for _ in range(4))
    p, q = Normal(m1, l1.exp()), Normal(m2, l2.exp())
    expected = (kl_divergence(p, q) + kl_divergence(q, p)).sum(-1)
    torch.testing.assert_close(symmetric_gaussian_kl(m1, l1, m2, l2), expected)


def test_policy_smoothness_loss_takes_the_worst_copy_by_hand():
    mean, log_std = torch.zeros(2, 1), torch.zeros(2, 1)
    mean_p, log_std_p = torch.tensor([[0.0], [1.0], [0.5], [0.0]]), torch.zeros(4, 1)
    # equal stds: symmetric KL = d^2; state 0 copies (0, 1) -> 1, state 1 copies (0.25, 0) -> 0.25
    assert policy_smoothness_loss(mean, log_std, mean_p, log_std_p).item() == pytest.approx(0.625)


def test_defaults_are_the_authors_and_edac_initialised():
    model = RO2O(3, 2)
    hp = model.hparams
    assert (hp.num_critics, hp.sample_size, hp.beta_q_smooth, hp.beta_ood, hp.beta_policy) == (10, 20, 1e-4, 0.1, 1.0)
    assert (hp.q_smooth_eps, hp.ood_smooth_eps, hp.policy_smooth_eps, hp.q_smooth_tau) == (0.01, 0.01, 0.01, 0.2)
    assert (hp.uncertainty_weight, hp.uncertainty_weight_min, hp.uncertainty_decay) == (1.0, 0.1, 5e-7)
    assert model.critic(torch.zeros(5, 3), torch.zeros(5, 2)).shape == (10, 5)  # one batched call, 10 members
    assert len(model.critic.layers) == 4 and model.critic.layers[0].out_features == 256
    assert all(torch.all(layer.bias[..., :] == 0.1) for layer in model.critic.layers[:-1])
    assert model.critic.layers[-1].weight.abs().max() <= 3e-3
    actor_out = model.actor.net[-1]
    assert actor_out.weight.abs().max() <= 1e-3 and torch.all(model.actor.net[0].bias == 0.1)
    assert (model.actor.log_std_min, model.actor.log_std_max) == (-5.0, 2.0)


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="num_critics"):
        RO2O(3, 2, num_critics=1)


def test_online_start_fixes_alpha_u_and_switches_regularizers_off():
    model = RO2O(3, 2, actor_hidden_dims=(8,), critic_hidden_dims=(8,))
    assert model.uncertainty_weight.item() == 1.0 and model.regularization.item() == 1.0
    model.on_online_start()
    assert model.uncertainty_weight.item() == pytest.approx(0.1)
    assert model.uncertainty_decay.item() == 0.0 and model.regularization.item() == 0.0
    keep = RO2O(3, 2, online_regularization=True, actor_hidden_dims=(8,), critic_hidden_dims=(8,))
    keep.on_online_start()
    assert keep.regularization.item() == 1.0


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def toy_npz(tmp_path_factory):
    return write_expert_toy(tmp_path_factory.mktemp("toy") / "toy.npz", rows=10000)


def test_ro2o_critic_learns_and_actor_moves_to_theexpert_action(toy_npz):
    # Small nets, 5 copies, a higher lr and temperature 0.05, without EDAC's near-zero output layer
    # (which holds the actor still for the first few hundred steps): the test's budget is 400 steps.
    L.seed_everything(0)
    steps = 400
    dm = OfflineTransitionDataModule(str(toy_npz), batch_size=128, normalize_observations=False)
    model = RO2O(
        dm.obs_dim,
        dm.action_dim,
        dm.max_action,
        discount=0.9,
        sample_size=5,
        uncertainty_decay=2e-4,
        initial_alpha=0.05,
        actor_lr=2e-3,
        critic_lr=2e-3,
        edac_initialization=False,
        actor_hidden_dims=(32, 32),
        critic_hidden_dims=(32, 32),
    )
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    expert = torch.as_tensor(expert_action(fixed.obs.numpy()))

    def measure():
        with torch.no_grad():
            _, parts = model.critic_loss(fixed, model.alpha)
            return parts["td"].item(), (model.policy_action(fixed.obs) - expert).pow(2).mean().item()

    td_before, imitation_before = measure()
    quiet_trainer(max_steps=steps).fit(model, datamodule=dm)
    td_after, imitation_after = measure()
    assert model.global_step == steps
    assert td_after < 0.5 * td_before, (td_before, td_after)
    # no behaviour-cloning term: the actor reaches the data's actions through the pessimistic ensemble only
    assert imitation_after < 0.5 * imitation_before and imitation_after < 0.25, (imitation_before, imitation_after)
    # alpha_u decayed once per critic update: 1.0 - 400 * 2e-4
    assert model.uncertainty_weight.item() == pytest.approx(0.92, abs=1e-9)  # float64: no drift
    (val,) = quiet_trainer(max_steps=1).validate(model, datamodule=dm, verbose=False)
    assert val["val/q_std"] >= 0.0 and "val/q_policy" in val


def test_uncertainty_schedule_keeps_the_papers_decay_exactly():
    # 5e-7 per update for 1.8M updates brings 1.0 to the floor 0.1; float32 would round each step
    model = RO2O(3, 2, actor_hidden_dims=(8,), critic_hidden_dims=(8,))
    w = model.uncertainty_weight
    for _ in range(1000):
        w = decayed_uncertainty_weight(w, model.uncertainty_decay, 0.1)
    assert w.item() == pytest.approx(1.0 - 1000 * 5e-7, abs=1e-12)


def test_critic_and_actor_losses_match_a_direct_transcription_of_the_authors_update():
    """The module's losses against the authors' tensor layout (tile the batch, then the offsets),
    written out here with the same random draws in the same order."""
    torch.manual_seed(0)
    eps = 0.3  # large offsets and default init: every part well above float32 noise
    model = RO2O(
        4,
        2,
        sample_size=3,
        uncertainty_weight=0.7,
        q_smooth_eps=eps,
        ood_smooth_eps=eps,
        policy_smooth_eps=eps,
        edac_initialization=False,
        actor_hidden_dims=(16,),
        critic_hidden_dims=(16,),
    )
    b, n, e = 5, 3, 10
    g = torch.Generator().manual_seed(1)
    batch = TransitionBatch(
        torch.randn(b, 4, generator=g),
        torch.rand(b, 2, generator=g) * 2 - 1,
        torch.randn(b, generator=g),
        torch.randn(b, 4, generator=g),
        (torch.rand(b, generator=g) < 0.3).float(),
        torch.zeros(b),
    )
    alpha = torch.tensor(0.3)
    torch.manual_seed(2)
    loss, parts = model.critic_loss(batch, alpha)
    torch.manual_seed(2)
    with torch.no_grad():
        next_action, next_logp = model.actor(batch.next_obs)
        q_next = (model.critic_target(batch.next_obs, next_action).min(0).values - alpha * next_logp).unsqueeze(-1)
        y = batch.reward.unsqueeze(-1) + 0.99 * (1 - batch.terminal.unsqueeze(-1)) * q_next
    q = model.critic(batch.obs, batch.action)
    td = ((q - y.view(1, -1)) ** 2).mean(dim=1).sum(dim=0)
    delta = 2 * eps * (torch.rand(n, 4) - 0.5)
    noised = batch.obs.reshape(-1, 1, 4).repeat(1, n, 1).reshape(-1, 4) + delta.reshape(1, n, 4).repeat(
        b, 1, 1
    ).reshape(-1, 4)
    noised_q = model.critic(noised, batch.action.reshape(b, 1, 2).repeat(1, n, 1).reshape(-1, 2)).reshape(e, b * n, 1)
    diff = noised_q - q.reshape(e, b, 1).repeat(1, 1, n).reshape(e, -1, 1)
    smooth = 0.8 * diff.clamp(min=0).square().mean(0) + 0.2 * diff.clamp(max=0).square().mean(0)
    smooth = smooth.reshape(b, n).max(1).values.mean()
    delta = 2 * eps * (torch.rand(n, 4) - 0.5)
    noised = batch.obs.reshape(-1, 1, 4).repeat(1, n, 1).reshape(-1, 4) + delta.reshape(1, n, 4).repeat(
        b, 1, 1
    ).reshape(-1, 4)
    with torch.no_grad():
        ood_action, _ = model.actor(noised)
    ood_q = model.critic(noised, ood_action).reshape(e, b * n, 1)
    ood = torch.nn.functional.mse_loss((ood_q - 0.7 * ood_q.std(0)).detach(), ood_q)
    # each part on its own: 1e-4 * smooth is far below the TD term's float32 resolution
    torch.testing.assert_close(parts["td"], td, rtol=1e-5, atol=0)
    torch.testing.assert_close(parts["q_smooth"], smooth, rtol=1e-5, atol=0)
    torch.testing.assert_close(parts["ood"], ood, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss, td + 1e-4 * smooth + 0.1 * ood)
    # the module differentiates L_Qsmooth through each state's worst copy alone: the same gradient
    # as through all n copies, here
    params = list(model.critic.parameters())
    for ours, theirs in zip(
        torch.autograd.grad(parts["q_smooth"], params, retain_graph=True), torch.autograd.grad(smooth, params)
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)

    torch.manual_seed(3)
    actor_loss, _, policy_smooth = model.actor_loss(batch, alpha)
    torch.manual_seed(3)
    mean, log_std = model.actor.mean_and_log_std(batch.obs)
    u = mean + torch.randn_like(mean) * log_std.exp()
    logp = Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u).pow(2) + 1e-6).sum(-1)
    q_loss = (alpha * logp - model.critic(batch.obs, torch.tanh(u)).min(0).values).mean()
    delta = 2 * eps * (torch.rand(n, 4) - 0.5)
    noised = batch.obs.reshape(-1, 1, 4).repeat(1, n, 1).reshape(-1, 4) + delta.reshape(1, n, 4).repeat(
        b, 1, 1
    ).reshape(-1, 4)
    mean_p, log_std_p = model.actor.mean_and_log_std(noised)
    clean = Normal(
        mean.reshape(-1, 1, 2).repeat(1, n, 1).reshape(-1, 2),
        log_std.exp().reshape(-1, 1, 2).repeat(1, n, 1).reshape(-1, 2),
    )
    noisy = Normal(mean_p, log_std_p.exp())
    kl = (kl_divergence(clean, noisy).sum(-1) + kl_divergence(noisy, clean).sum(-1)).reshape(b, n)
    torch.testing.assert_close(policy_smooth, kl.max(1).values.mean(), rtol=1e-5, atol=0)
    # the authors' log-density adds 1e-6 inside log(1 - tanh^2); policylab's is exact
    torch.testing.assert_close(actor_loss, q_loss + 1.0 * kl.max(1).values.mean(), rtol=1e-4, atol=1e-4)
