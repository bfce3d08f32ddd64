"""TD3 / TD3+BC loss functions against hand-computed numbers."""

import math

import torch

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses import (
    clipped_double_q_target,
    ensemble_mse_loss,
    smoothed_target_action,
    td3_critic_target,
    td3bc_actor_loss,
)


def test_clipped_double_q_target_by_hand():
    reward = torch.tensor([1.0, -0.5, 2.0])
    terminal = torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([[3.0, 10.0, -1.0], [4.0, -2.0, -3.0]])
    # row by row: 1 + 0.9*min(3,4)=3.7 ; terminal -> -0.5 ; 2 + 0.9*min(-1,-3) = -0.7
    expected = torch.tensor([3.7, -0.5, -0.7])
    torch.testing.assert_close(clipped_double_q_target(reward, terminal, next_q, 0.9), expected)


def test_ensemble_mse_loss_by_hand():
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    target = torch.tensor([1.5, 3.0])
    # head 1: (0.25 + 1)/2 = 0.625 ; head 2: (2.25 + 1)/2 = 1.625
    assert math.isclose(ensemble_mse_loss(q, target).item(), 2.25, rel_tol=1e-6)


def test_td3bc_actor_loss_by_hand():
    q_pi = torch.tensor([2.0, -4.0])
    pi = torch.tensor([[0.5, 0.0], [1.0, -1.0]])
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    loss, lam = td3bc_actor_loss(q_pi, pi, a, alpha=2.5)
    # lambda = 2.5 / mean(|2|,|-4|) = 2.5/3 ; -lambda * mean(q) = -(2.5/3)*(-1) = 0.8333
    # bc = mean(0.25, 0, 0, 4) = 1.0625
    assert math.isclose(lam.item(), 2.5 / 3, rel_tol=1e-6)
    assert math.isclose(loss.item(), 2.5 / 3 + 1.0625, rel_tol=1e-6)


def test_td3bc_lambda_is_not_differentiated():
    q_pi = torch.tensor([2.0, -4.0], requires_grad=True)
    pi = torch.zeros(2, 1)
    loss, _ = td3bc_actor_loss(q_pi, pi, pi, alpha=3.0)
    loss.backward()
    # d/dq of -lambda*mean(q) with lambda constant = -lambda/2 = -(3/3)/2
    torch.testing.assert_close(q_pi.grad, torch.tensor([-0.5, -0.5]))


def test_smoothed_target_action_noise_is_clipped_and_bounded():
    torch.manual_seed(0)
    a = torch.full((10000, 3), 0.9)
    out = smoothed_target_action(a, noise_std=0.2, noise_clip=0.5, max_action=1.0)
    assert out.max() <= 1.0 and out.min() >= 0.4 - 1e-6
    noise = smoothed_target_action(torch.zeros(10000, 3), 0.2, 0.5, 1.0)
    assert noise.abs().max() <= 0.5 + 1e-6
    assert abs(noise.std().item() - 0.2) < 0.01  # a 2.5-sigma clip barely changes the spread


def _batch(next_obs, reward, terminal):
    n = len(reward)
    return TransitionBatch(torch.zeros(n, 1), torch.zeros(n, 1), reward, next_obs, terminal, torch.zeros(n))


def test_td3_critic_target_by_hand_without_noise():
    def actor(s):
        return 2 * s

    def critic(s, a):
        return torch.stack([(s + a).squeeze(1), (s - a).squeeze(1)])

    batch = _batch(torch.tensor([[0.3], [0.8]]), torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]))
    target, next_action = td3_critic_target(actor, critic, batch, 0.5, 0.0, 0.5, 1.0)
    # a' = clip(2 s', -1, 1) = 0.6, 1.0 ; Q'_1 = s' + a' = 0.9, 1.8 ; Q'_2 = s' - a' = -0.3, -0.2
    # y = r + 0.5 * (1 - d) * min = 1 + 0.5 * -0.3 = 0.85 ; terminal: 2
    torch.testing.assert_close(next_action, torch.tensor([[0.6], [1.0]]))
    torch.testing.assert_close(target, torch.tensor([0.85, 2.0]))


def test_td3_critic_target_noise_is_in_units_of_the_action_bound():
    torch.manual_seed(0)
    batch = _batch(torch.zeros(20000, 1), torch.zeros(20000), torch.zeros(20000))
    _, next_action = td3_critic_target(
        lambda s: s, lambda s, a: a.T.expand(2, -1), batch, 0.9, policy_noise=0.2, noise_clip=0.5, max_action=2.0
    )
    assert next_action.abs().max() <= 1.0 + 1e-6  # noise clip 0.5 * 2
    assert abs(next_action.std().item() - 0.4) < 0.02  # sigma 0.2 * 2, barely changed by a 2.5-sigma clip
