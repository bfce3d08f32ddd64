"""FamO2O: the sinusoid encoding and the losses by hand, the balance model's density against
torch.distributions, the coefficients offline (uniform) and online (the balance model's), the
balance step raising Q, and learning the toy offline task."""

import math

import lightning as L
import pytest
import torch
from conftest import expert_action, quiet_trainer, write_expert_toy

from policylab.callbacks import EnvInteraction
from policylab.datamodules import OfflineTransitionDataModule
from policylab.losses.famo2o import balance_model_loss, balance_temperature_loss, universal_actor_loss
from policylab.modules.offline.famo2o import FamO2O
from policylab.nn.balance import BalanceModel, coefficient_from_unit, sinusoid_encoding

SMALL = dict(
    actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), value_hidden_dims=(32, 32), balance_hidden_dims=(32, 32)
)


# ----------------------------------------------------------------------------- encoding and losses by hand
def test_sinusoid_encoding_by_hand():
    # d = 4, n = 100: frequencies 1 and 100^(-2/4) = 0.1; beta = 1 -> sin 1, cos 1, sin 0.1, cos 0.1
    torch.testing.assert_close(
        sinusoid_encoding(torch.tensor([1.0]), dim=4, base=100.0),
        torch.tensor([[0.8414709848, 0.5403023059, 0.0998334166, 0.9950041653]]),
    )
    # the paper's d = 6, n = 10000: angles 2, 2 * 10000^(-1/3) = 0.0928317767, 2 * 10000^(-2/3) = 0.0043088694
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
            [0.9092974268, -0.4161468365, 0.0926985008, 0.9956942241, 0.0043088560, 0.9999907168],
        ]
    )
    torch.testing.assert_close(sinusoid_encoding(torch.tensor([[0.0], [2.0]])), expected)
    with pytest.raises(ValueError, match="even dim"):
        sinusoid_encoding(torch.tensor([1.0]), dim=5)


def test_coefficient_map_by_hand():
    unit = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    torch.testing.assert_close(coefficient_from_unit(unit, 1.0, 5.0), torch.tensor([1.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(coefficient_from_unit(unit, 8.0, 14.0), torch.tensor([8.0, 11.0, 12.5, 14.0]))


def test_universal_actor_loss_by_hand():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    advantage = torch.tensor([0.5, 1.0], requires_grad=True)
    coefficient = torch.tensor([2.0, 10.0], requires_grad=True)
    # weights exp(2 * 0.5) = e and exp(10 * 1) capped at 100: loss = -(e * -1 + 100 * -2) / 2
    loss = universal_actor_loss(log_prob, advantage, coefficient, max_weight=100.0)
    assert loss.item() == pytest.approx((math.e + 200.0) / 2, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-math.e / 2, -50.0]))
    assert advantage.grad is None and coefficient.grad is None  # weights are constants


def test_balance_losses_by_hand():
    q = torch.tensor([[1.0, 4.0], [3.0, 2.0]])  # min over the two critics: 1, 2
    log_prob = torch.tensor([-0.5, 0.1])
    # mean(2 * -0.5 - 1, 2 * 0.1 - 2) = mean(-2, -1.8)
    assert balance_model_loss(q, log_prob, 2.0).item() == pytest.approx(-1.9)
    log_temperature = torch.tensor(math.log(2.0), requires_grad=True)
    # entropy 0.3, target -0.5: loss 2 * 0.8 = 1.6, d/d log_temperature = the same 1.6 (> 0: it falls)
    loss = balance_temperature_loss(log_temperature, torch.tensor([-0.2, -0.4]), target_entropy=-0.5)
    assert loss.item() == pytest.approx(1.6)
    loss.backward()
    assert log_temperature.grad.item() == pytest.approx(1.6)


def test_balance_model_density_matches_torch_distributions():
    torch.manual_seed(0)
    model = BalanceModel(3, (1.0, 5.0), hidden_dims=(16,)).double()
    with torch.no_grad():
        model.log_std.fill_(-0.7)
    obs = torch.randn(64, 3, dtype=torch.float64)
    coefficient, log_prob = model.rsample(obs, torch.Generator().manual_seed(1))
    assert coefficient.shape == log_prob.shape == (64,)
    assert coefficient.min() > 1.0 and coefficient.max() < 5.0
    unit = (coefficient - 1.0) / 4.0 * 2.0 - 1.0
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(model.net(obs).squeeze(-1), math.exp(-0.7)), torch.distributions.TanhTransform()
    )
    torch.testing.assert_close(log_prob, dist.log_prob(unit), rtol=1e-6, atol=1e-6)
    # the deterministic coefficient: tanh of the mean, mapped onto (1, 5)
    torch.testing.assert_close(model(obs), 1.0 + (torch.tanh(model.net(obs).squeeze(-1)) + 1.0) * 2.0)


# ----------------------------------------------------------------------------- offline and online coefficients
def _balance_fixed_at(model: FamO2O, coefficient: float) -> None:
    """Make the balance model output ``coefficient`` for every state, with a negligible spread."""
    low, high = model.coefficient_range
    last = model.balance.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.atanh((coefficient - low) / (high - low) * 2.0 - 1.0))
        model.balance.log_std.fill_(-10.0)


def test_offline_coefficients_are_uniform_online_ones_come_from_the_balance_model():
    torch.manual_seed(0)
    model = FamO2O(5, 2, **SMALL)
    _balance_fixed_at(model, 4.0)
    obs = torch.randn(20_000, 5)
    offline = model.actor_coefficients(obs)
    assert 1.0 <= offline.min() and offline.max() <= 5.0
    assert offline.mean().item() == pytest.approx(3.0, abs=0.05)  # U(1, 5): mean 3, std 4 / sqrt(12)
    assert offline.std().item() == pytest.approx(4.0 / math.sqrt(12.0), abs=0.03)
    model.on_online_start()
    online = model.actor_coefficients(obs[:256])
    torch.testing.assert_close(online, torch.full((256,), 4.0), atol=2e-3, rtol=0)
    # acting, offline and online, uses the balance model's deterministic coefficient
    fixed = torch.full((256,), 4.0)
    torch.testing.assert_close(model.policy_action(obs[:256]), model.actor.mean(obs[:256], fixed))
    explored = model.exploration_action(obs[:256], 0.1, torch.Generator().manual_seed(3))
    expected = model.actor.sample(obs[:256], fixed, torch.Generator().manual_seed(3))
    torch.testing.assert_close(explored, expected)


class _LinearCritic(torch.nn.Module):
    """Two equal heads ``Q(s, a) = 10 * a . (s W)``: a critic whose best coefficient differs by state."""

    def __init__(self, obs_dim, action_dim):
        super().__init__()
        self.register_buffer("weight", torch.randn(obs_dim, action_dim, generator=torch.Generator().manual_seed(5)))

    def forward(self, obs, action):
        return (10.0 * (action * (obs @ self.weight)).sum(-1)).expand(2, -1)


def test_balance_step_trains_only_the_balance_model_towards_higher_q():
    torch.manual_seed(0)
    model = FamO2O(3, 2, initial_temperature=1e-6, **SMALL)
    obs = torch.randn(128, 3)
    batch = type("Batch", (), {"obs": obs})()
    loss = model.balance_loss(batch)[0]
    loss.backward()
    assert all(p.grad is None for p in [*model.actor.parameters(), *model.critic_target.parameters()])
    assert model.log_temperature.grad is None
    assert all(p.grad is not None for p in model.balance.parameters())

    model.critic_target = _LinearCritic(3, 2)  # reparameterized gradients of a linear Q carry no action noise
    grid = torch.linspace(1.0, 5.0, 81)

    def q_of(coefficient):
        with torch.no_grad():
            return model.critic_target(obs, model.actor.mean(obs, coefficient))[0]

    per_grid = torch.stack([q_of(torch.full((128,), float(b))) for b in grid])  # [81, 128]
    best, average = per_grid.max(dim=0).values.mean().item(), per_grid.mean().item()
    before = q_of(model.balance(obs)).mean().item()
    optimizer = torch.optim.Adam(model.balance.parameters(), lr=3e-3)
    for _ in range(200):
        optimizer.zero_grad()
        model.balance_loss(batch)[0].backward()
        optimizer.step()
    after = q_of(model.balance(obs)).mean().item()
    # each state's own coefficient: most of the way from the average over coefficients to each state's best
    assert after - average > 0.8 * (best - average), (before, after, average, best)
    assert after - before > 0.5 * (best - average), (before, after, average, best)


# ----------------------------------------------------------------------------- learning
def test_famo2o_learns_the_toy_task(tmp_path):
    toy = write_expert_toy(tmp_path / "toy.npz", rows=10000)
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(toy), batch_size=256, normalize_observations=False)
    model = FamO2O(
        dm.obs_dim,
        dm.action_dim,
        dm.max_action,
        discount=0.9,
        actor_hidden_dims=(64, 64),
        critic_hidden_dims=(64, 64),
        value_hidden_dims=(64, 64),
        balance_hidden_dims=(64, 64),
    )
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    expert = torch.as_tensor(expert_action(fixed.obs.numpy()))

    def measure():
        with torch.no_grad():
            return (
                model.critic_loss(fixed, model.value(fixed.next_obs).squeeze(-1))[0].item(),
                (model.policy_action(fixed.obs) - expert).pow(2).mean().item(),
            )

    critic_before, imitation_before = measure()
    quiet_trainer(max_steps=600).fit(model, datamodule=dm)
    critic_after, imitation_after = measure()
    assert model.global_step == 600 and not model.online_phase
    assert critic_after < 0.2 * critic_before, (critic_before, critic_after)  # 0.92 -> 0.03
    # 0.45 -> 0.001: the universal actor at the balance model's coefficients acts as the expert
    assert imitation_after < 0.02 * imitation_before and imitation_after < 0.01, (imitation_before, imitation_after)
    (val,) = quiet_trainer(max_steps=1).validate(model, datamodule=dm, verbose=False)
    assert 1.0 <= val["val/coefficient_mean"] <= 5.0, val


class _Recorded(FamO2O):
    """FamO2O that records, per update, whether its actor's coefficients came from the balance model."""

    phases: list

    def actor_coefficients(self, obs):
        self.phases.append((self.global_step, self.online_phase))
        return super().actor_coefficients(obs)


def test_online_phase_switches_the_actor_to_the_balance_models_coefficients(hopper_hdf5):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=64, online_capacity=100)
    model = _Recorded(11, 3, **SMALL)
    model.phases = []
    interaction = EnvInteraction(start_step=30, seed=1)
    quiet_trainer(max_steps=60, callbacks=[interaction], limit_val_batches=0).fit(model, dm)
    assert [step for step, online in model.phases if online] == list(range(30, 60))
    assert [step for step, online in model.phases if not online] == list(range(30))
    assert interaction.env_steps == 30
