"""TD3 / TD3+BC loss functions against hand-computed numbers."""

import math

import torch

from policylab.losses import clipped_double_q_target, ensemble_mse_loss, smoothed_target_action, td3bc_actor_loss


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
