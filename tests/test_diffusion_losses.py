"""Diffusion preference losses against numbers worked out by hand and formulas written another
way (diffusers' beta without the 1/2, sigmoid as 1/(1+exp))."""

import math

import pytest
import torch

from policylab.losses.diffusion import (
    denoising_error,
    diffusion_dpo_loss,
    diffusion_dpo_margin,
    diffusion_dro_loss,
    implicit_accuracy,
    pseudo_huber,
)


def test_diffusion_dpo_is_log_2_when_the_model_is_its_reference():
    err_w, err_l = torch.rand(5), torch.rand(5)
    loss = diffusion_dpo_loss(err_w, err_l, err_w.clone(), err_l.clone())
    torch.testing.assert_close(loss, torch.full((5,), math.log(2)))
    assert implicit_accuracy(diffusion_dpo_margin(err_w, err_l, err_w, err_l)).item() == 0.5  # all ties


def test_diffusion_dpo_by_hand_and_in_diffusers_form():
    # model improves on the reference by 0.002 on the winner and worsens by 0.001 on the loser
    model_w, model_l, ref_w, ref_l = torch.tensor([0.100]), torch.tensor([0.201]), torch.tensor([0.102]), torch.tensor([0.200])
    beta = 5000.0
    inner = -(beta / 2) * ((0.100 - 0.102) - (0.201 - 0.200))  # = 2500 * 0.003 = 7.5
    assert diffusion_dpo_margin(model_w, model_l, ref_w, ref_l, beta).item() == pytest.approx(inner, rel=1e-4)
    expected = math.log(1 + math.exp(-inner))
    assert diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta).item() == pytest.approx(expected, rel=1e-3)
    # diffusers' example: -logsigmoid(-beta' * (model_diff - ref_diff)) with per-image differences
    # model_diff = err_w - err_l and beta' = 2500, i.e. beta / 2.
    model_diff, ref_diff = model_w - model_l, ref_w - ref_l
    diffusers = -torch.nn.functional.logsigmoid(-(beta / 2) * (model_diff - ref_diff))
    torch.testing.assert_close(diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta), diffusers)


def test_denoising_error_is_a_per_sample_mean():
    prediction = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    target = torch.zeros_like(prediction)
    torch.testing.assert_close(denoising_error(prediction, target), torch.tensor([(1 + 4 + 9 + 16) / 4, 0.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        denoising_error(prediction, target[:, :1])


def test_implicit_accuracy_counts_ties_half():
    assert implicit_accuracy(torch.tensor([1.0, -1.0, 0.0, 2.0])).item() == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_diffusion_dro_hinge():
    expert, policy = torch.tensor([-0.01, 0.02, 0.0]), torch.tensor([0.0, 0.0, 0.0])
    # -0.01 + 0.001 < 0 -> 0; 0.02 + 0.001 = 0.021; 0 + 0.001
    torch.testing.assert_close(diffusion_dro_loss(expert, policy), torch.tensor([0.0, 0.021, 0.001]))


def test_pseudo_huber_by_hand():
    d = torch.tensor([0.0, 0.001, 3.0])
    expected = torch.tensor([0.0, math.sqrt(2e-6) - 0.001, math.sqrt(9 + 1e-6) - 0.001])
    torch.testing.assert_close(pseudo_huber(d), expected)
