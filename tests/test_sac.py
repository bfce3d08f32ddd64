"""SAC: its math against independent formulas, the replay buffer, learning on a small task, resume."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from policylab.losses import sac_actor_loss, sac_critic_target, sac_temperature_loss, squashed_gaussian_log_prob
from policylab.datamodules import TransitionBuffer
from policylab.nn import TanhGaussianActor


@pytest.mark.parametrize("max_action", [1.0, 2.5])
def test_squashed_gaussian_log_prob_matches_torch_distributions(max_action):
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.rand(64, 3) * 2 - 1.5
    pre_tanh = mean + torch.randn(64, 3) * log_std.exp()
    reference = TransformedDistribution(
        Normal(mean.double(), log_std.exp().double()), [TanhTransform(), AffineTransform(0.0, max_action)]
    ).log_prob(max_action * torch.tanh(pre_tanh.double())).sum(-1)
    ours = squashed_gaussian_log_prob(pre_tanh, mean, log_std, max_action)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


def test_squashed_gaussian_log_prob_is_finite_where_tanh_saturates():
    pre_tanh = torch.tensor([[30.0, -30.0]])
    value = squashed_gaussian_log_prob(pre_tanh, pre_tanh, torch.zeros(1, 2))
    # log(1 - tanh(30)^2) = log(4) - 60 - 2 log(1 + e^-60) ~ -58.6137; gaussian part at the mean: -log sqrt(2 pi)
    expected = 2 * (-0.5 * math.log(2 * math.pi)) - 2 * (math.log(4) - 60)
    assert math.isfinite(value.item()) and math.isclose(value.item(), expected, rel_tol=1e-5)


def test_sac_critic_target_by_hand():
    reward = torch.tensor([1.0, 0.5])
    terminal = torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[2.0, 7.0], [3.0, 5.0]])
    next_log_prob = torch.tensor([-1.0, 4.0])
    # row 0: 1 + 0.9 * (min(2, 3) - 0.2 * -1) = 1 + 0.9 * 2.2 = 2.98 ; row 1 is terminal: 0.5
    torch.testing.assert_close(sac_critic_target(reward, terminal, next_q, next_log_prob, 0.2, 0.9), torch.tensor([2.98, 0.5]))


def test_sac_actor_loss_by_hand():
    q_pi = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    log_prob = torch.tensor([-1.0, 2.0])
    # mean(0.5 * -1 - 0.5, 0.5 * 2 - (-2)) = mean(-1, 3) = 1
    assert math.isclose(sac_actor_loss(q_pi, log_prob, 0.5).item(), 1.0, rel_tol=1e-6)


def test_temperature_moves_alpha_toward_the_target_entropy():
    log_alpha = torch.zeros((), requires_grad=True)
    # entropy -log_prob = -5 is below the target -3: d loss / d log_alpha = -(5 - 3) < 0, alpha rises
    sac_temperature_loss(log_alpha, torch.full((8,), 5.0), target_entropy=-3.0).backward()
    assert math.isclose(log_alpha.grad.item(), -2.0, rel_tol=1e-6)
    log_alpha.grad = None
    # entropy 0.5 is above the target: gradient -(-0.5 - 3) = 3.5 > 0, alpha falls
    sac_temperature_loss(log_alpha, torch.full((8,), -0.5), target_entropy=-3.0).backward()
    assert math.isclose(log_alpha.grad.item(), 3.5, rel_tol=1e-6)


def test_tanh_gaussian_actor_samples_in_bounds_with_matching_log_prob():
    actor = TanhGaussianActor(5, 2, max_action=2.0, hidden_dims=(16,))
    obs = torch.randn(128, 5)
    action, log_prob = actor(obs, torch.Generator().manual_seed(0))
    assert action.abs().max() <= 2.0 and log_prob.shape == (128,)
    again, _ = actor(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(action, again)
    assert actor.deterministic(obs).shape == (128, 2)


def _rows(n, start=0.0):
    value = np.arange(start, start + n, dtype=np.float32)
    return {"obs": np.repeat(value[:, None], 2, 1), "action": value[:, None], "reward": value, "next_obs": np.repeat(value[:, None], 2, 1),
            "terminal": np.zeros(n), "timeout": np.zeros(n)}


def test_buffer_appends_keeps_initial_rows_and_wraps_over_appended_ones():
    initial = {k: v for k, v in _rows(3, start=100.0).items()}
    buffer = TransitionBuffer({**initial, "terminal": initial["terminal"], "timeout": initial["timeout"]}, capacity=6)
    assert len(buffer) == 3
    buffer.add(**_rows(2))
    assert len(buffer) == 5 and buffer.all().reward.tolist() == [100, 101, 102, 0, 1]
    buffer.add(**_rows(3, start=2.0))  # 2 fills the last row, 3 and 4 overwrite 0 and 1
    assert len(buffer) == 6 and buffer.all().reward.tolist() == [100, 101, 102, 3, 4, 2]
    assert buffer.appended == 5

    restored = TransitionBuffer({**initial}, capacity=6)
    restored.restore_appended(buffer.appended_rows(), buffer.appended)
    torch.testing.assert_close(restored.data, buffer.data)
    restored.add(**_rows(1, start=9.0))  # continues the ring where the original stopped
    assert restored.all().reward.tolist() == [100, 101, 102, 3, 4, 9]


def test_empty_buffer_refuses_to_sample():
    buffer = TransitionBuffer(obs_dim=2, action_dim=1, capacity=4)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(2)
