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
    seppo_loss,
    smoothed_preference,
    smpo_loss,
)


def test_diffusion_dpo_is_log_2_when_the_model_is_its_reference():
    err_w, err_l = torch.rand(5), torch.rand(5)
    loss = diffusion_dpo_loss(err_w, err_l, err_w.clone(), err_l.clone())
    torch.testing.assert_close(loss, torch.full((5,), math.log(2)))
    assert implicit_accuracy(diffusion_dpo_margin(err_w, err_l, err_w, err_l)).item() == 0.5  # all ties


def test_diffusion_dpo_by_hand_and_in_diffusers_form():
    # model improves on the reference by 0.002 on the winner and worsens by 0.001 on the loser
    model_w, model_l, ref_w, ref_l = (
        torch.tensor([0.100]),
        torch.tensor([0.201]),
        torch.tensor([0.102]),
        torch.tensor([0.200]),
    )
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


def test_smoothed_preference_is_a_softmax_of_normalized_scores():
    # scores 0.25 and 0.20 on bounds (0.1154, 0.2820): n = (s - low) / (high - low)
    low, high = 0.1154, 0.2820
    n_w, n_l = (0.25 - low) / (high - low), (0.20 - low) / (high - low)
    expected = math.exp(n_w) / (math.exp(n_w) + math.exp(n_l))
    p = smoothed_preference(torch.tensor([0.25]), torch.tensor([0.20]), low, high)
    assert p.item() == pytest.approx(expected, rel=1e-6)
    assert smoothed_preference(torch.tensor([1.0]), torch.tensor([1.0])).item() == 0.5
    with pytest.raises(ValueError, match="low < high"):
        smoothed_preference(torch.tensor([1.0]), torch.tensor([0.0]), 1.0, 1.0)


def test_smpo_by_hand_log_2_at_the_reference_and_silent_on_ties():
    model_w, model_l, ref_w, ref_l = (
        torch.tensor([0.100]),
        torch.tensor([0.201]),
        torch.tensor([0.102]),
        torch.tensor([0.200]),
    )
    p, beta = torch.tensor([0.6]), 2000.0
    # the authors' form: scale = -0.5 * beta * (2p - 1) * 10 on (model_diff - ref_diff)
    inside = -0.5 * beta * (2 * 0.6 - 1) * 10 * ((0.100 - 0.201) - (0.102 - 0.200))
    expected = math.log(1 + math.exp(-inside))
    assert smpo_loss(model_w, model_l, ref_w, ref_l, p, beta).item() == pytest.approx(expected, rel=1e-3)
    e = torch.rand(4)
    torch.testing.assert_close(smpo_loss(e, e + 0.1, e, e + 0.1, torch.rand(4)), torch.full((4,), math.log(2)))
    torch.testing.assert_close(
        smpo_loss(torch.rand(4), torch.rand(4), e, e, torch.full((4,), 0.5)), torch.full((4,), math.log(2))
    )


def test_seppo_switches_between_dpo_and_the_winner_term_by_the_anchor():
    beta = 1000.0
    # sample 0: the model beats the reference on the winner (D > 0) -> DPO with s as the loser;
    # sample 1: the reference is better on the winner (D < 0) -> the winner term only (indicator)
    # or s counted as a second winner (sign).
    model_w, ref_w = torch.tensor([0.10, 0.12]), torch.tensor([0.11, 0.11])
    model_s, ref_s = torch.tensor([0.30, 0.30]), torch.tensor([0.29, 0.29])

    def nll(x):
        return math.log(1 + math.exp(-x))

    dpo_0 = -(beta / 2) * ((0.10 - 0.11) - (0.30 - 0.29))
    winner_1 = -(beta / 2) * (0.12 - 0.11)
    both_1 = -(beta / 2) * ((0.12 - 0.11) + (0.30 - 0.29))
    indicator = seppo_loss(model_w, ref_w, model_s, ref_s, beta, "indicator")
    sign = seppo_loss(model_w, ref_w, model_s, ref_s, beta, "sign")
    assert indicator.tolist() == pytest.approx([nll(dpo_0), nll(winner_1)], rel=1e-3)
    assert sign.tolist() == pytest.approx([nll(dpo_0), nll(both_1)], rel=1e-3)
    # the decision is not differentiated: gradients flow only through the errors
    model_w.requires_grad_(True)
    seppo_loss(model_w, ref_w, model_s, ref_s, beta).sum().backward()
    assert torch.isfinite(model_w.grad).all()
    with pytest.raises(ValueError, match="criterion"):
        seppo_loss(model_w, ref_w, model_s, ref_s, beta, "other")
