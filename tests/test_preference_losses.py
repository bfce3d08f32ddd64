"""The DPO family against numbers computed independently: scalar math written out with
``math`` (log(1 + e^-x) rather than logsigmoid), hand-worked values, and the properties each
paper states (rDPO's unbiasedness, IPO's finite target, SPPO's hard-label form)."""

import math

import pytest
import torch

from policylab.losses.preference import (
    RunningMean,
    bco_pair_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log_ratios,
    nca_loss,
    robust_dpo_loss,
    rpo_loss,
    sem_dpo_loss,
    semantic_weight,
    simpo_loss,
    sppo_loss,
)

PAIRS = [(-12.0, -15.0, -13.0, -14.0), (-3.5, -2.0, -4.0, -2.5), (-20.0, -20.0, -20.0, -20.0), (-1.0, -9.0, -6.0, -2.0)]


def softplus_neg(x: float) -> float:
    """-log sigma(x) = log(1 + e^-x), written without torch."""
    return math.log1p(math.exp(-x))


def ratios():
    pw, pl, rw, rl = (torch.tensor(c, dtype=torch.float64) for c in zip(*PAIRS))
    return log_ratios(pw, pl, rw, rl)


def h_values():
    return [(pw - rw) - (pl - rl) for pw, pl, rw, rl in PAIRS]


def test_log_ratios_by_hand():
    chosen, rejected = ratios()
    assert chosen.tolist() == [1.0, 0.5, 0.0, 5.0]
    assert rejected.tolist() == [-1.0, 0.5, 0.0, -7.0]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_log1p_exp_and_log2_at_zero(beta):
    chosen, rejected = ratios()
    expected = [softplus_neg(beta * h) for h in h_values()]
    assert dpo_loss(chosen, rejected, beta).tolist() == pytest.approx(expected, rel=1e-12)
    assert dpo_loss(chosen, rejected, beta)[2].item() == pytest.approx(math.log(2))


def test_dpo_gradient_is_minus_beta_sigma_of_minus_beta_h():
    chosen, rejected = ratios()
    chosen.requires_grad_(True)
    dpo_loss(chosen, rejected, 0.1).sum().backward()
    expected = [-0.1 / (1 + math.exp(0.1 * h)) for h in h_values()]
    assert chosen.grad.tolist() == pytest.approx(expected, rel=1e-12)


def test_conservative_dpo_mixes_both_labels():
    chosen, rejected = ratios()
    eps, beta = 0.2, 0.1
    expected = [(1 - eps) * softplus_neg(beta * h) + eps * softplus_neg(-beta * h) for h in h_values()]
    assert dpo_loss(chosen, rejected, beta, label_smoothing=eps).tolist() == pytest.approx(expected, rel=1e-12)


def test_robust_dpo_by_hand_and_unbiased_under_flips():
    chosen, rejected = ratios()
    eps, beta = 0.2, 0.1
    # h = 2: [-(0.8) log s(0.2) + 0.2 log s(-0.2)] / 0.6
    by_hand = (0.8 * softplus_neg(0.2) - 0.2 * softplus_neg(-0.2)) / 0.6
    assert robust_dpo_loss(chosen, rejected, beta, eps)[0].item() == pytest.approx(by_hand, rel=1e-12)
    # the expectation over a label flipped with probability eps is the clean DPO loss
    expected_over_flips = (1 - eps) * robust_dpo_loss(chosen, rejected, beta, eps) + eps * robust_dpo_loss(
        rejected, chosen, beta, eps
    )
    assert expected_over_flips.tolist() == pytest.approx(dpo_loss(chosen, rejected, beta).tolist(), rel=1e-12)
    assert robust_dpo_loss(chosen, rejected, beta, 0.0).tolist() == pytest.approx(
        dpo_loss(chosen, rejected, beta).tolist()
    )
    with pytest.raises(ValueError, match="flip_rate"):
        robust_dpo_loss(chosen, rejected, beta, 0.5)


def test_ipo_targets_one_over_two_beta():
    beta = 0.25  # target gap 2
    chosen = torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64)
    rejected = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)
    assert ipo_loss(chosen, rejected, beta).tolist() == [0.0, 1.0, 4.0]


def test_hinge_by_hand():
    chosen, rejected = ratios()  # h = 2, 0, 0, 12
    assert hinge_loss(chosen, rejected, 0.1).tolist() == pytest.approx([0.8, 1.0, 1.0, 0.0])


def test_nca_by_hand():
    chosen, rejected = ratios()
    beta = 0.1
    expected = [
        softplus_neg(beta * w) + 0.5 * softplus_neg(-beta * w) + 0.5 * softplus_neg(-beta * l)
        for w, l in zip(chosen.tolist(), rejected.tolist())
    ]
    assert nca_loss(chosen, rejected, beta).tolist() == pytest.approx(expected, rel=1e-12)


def test_bco_pair_with_shift_and_its_running_mean():
    chosen, rejected = ratios()
    beta, delta = 0.1, 0.05
    expected = [
        softplus_neg(beta * w - delta) + softplus_neg(-(beta * l - delta))
        for w, l in zip(chosen.tolist(), rejected.tolist())
    ]
    assert bco_pair_loss(chosen, rejected, beta, delta).tolist() == pytest.approx(expected, rel=1e-12)
    running = RunningMean()
    assert running.update(torch.tensor([1.0, 3.0])).item() == 2.0
    assert running.update(torch.tensor([0.0, 0.0, 0.0, 4.0])).item() == 1.5  # mean of the step means (2, 1)
    restored = RunningMean()
    restored.load_state_dict(running.state_dict())
    assert restored.update(torch.tensor([3.0])).item() == pytest.approx(2.0)


def test_sppo_hard_labels_and_win_rates():
    beta = 0.5  # 1/(2 beta) = 1
    chosen = torch.tensor([1.0, 0.0], dtype=torch.float64)
    rejected = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    # hard: (r_w - 1)^2 + (r_l + 1)^2
    assert sppo_loss(chosen, rejected, beta).tolist() == [0.0, 1.0 + 2.25]
    # P_w = 0.75, P_l = 0.25: targets +-0.5
    assert sppo_loss(chosen, rejected, beta, 0.75, 0.25).tolist() == [0.25 + 0.25, 0.25 + 1.0]


def test_rpo_adds_the_chosen_nll():
    chosen, rejected = ratios()
    nll = torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64)
    expected = [softplus_neg(0.1 * h) + 2.0 * n for h, n in zip(h_values(), nll.tolist())]
    assert rpo_loss(chosen, rejected, nll, beta=0.1, alpha=2.0).tolist() == pytest.approx(expected, rel=1e-12)


def test_simpo_by_hand():
    avg_w = torch.tensor([-0.5, -1.0], dtype=torch.float64)
    avg_l = torch.tensor([-1.0, -0.5], dtype=torch.float64)
    # beta 2, gamma 0.5: logits 2 * 0.5 - 0.5 = 0.5 and 2 * -0.5 - 0.5 = -1.5
    assert simpo_loss(avg_w, avg_l, 2.0, 0.5).tolist() == pytest.approx(
        [softplus_neg(0.5), softplus_neg(-1.5)], rel=1e-12
    )


def test_semantic_weight_is_one_for_same_direction_and_exp_minus_alpha_for_orthogonal():
    prompt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    chosen = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], requires_grad=True)
    weight = semantic_weight(prompt, chosen, alpha=0.5)
    assert weight.tolist() == pytest.approx([1.0, math.exp(-0.5), math.exp(-1.0)])
    assert not weight.requires_grad


def test_sem_dpo_weights_dpo_by_the_distance():
    chosen, rejected = ratios()
    distance = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    expected = [math.exp(-0.5 * d) * softplus_neg(0.1 * h) for d, h in zip(distance.tolist(), h_values())]
    assert sem_dpo_loss(chosen, rejected, distance, beta=0.1, alpha=0.5).tolist() == pytest.approx(expected, rel=1e-12)
