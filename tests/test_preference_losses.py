"""The DPO family against numbers computed independently: scalar math written out with
``math`` (log(1 + e^-x) rather than logsigmoid), hand-worked values, and the properties each
paper states (rDPO's unbiasedness, IPO's finite target, SPPO's hard-label form)."""

import math

import pytest
import torch

from policylab.losses.pairwise import PAIRWISE_LOSSES, PairStats, get_pairwise_loss
from policylab.losses.preference import (
    apo_zero_loss,
    bco_pair_loss,
    dpo_loss,
    exo_pair_loss,
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
        softplus_neg(beta * r_w) + 0.5 * softplus_neg(-beta * r_w) + 0.5 * softplus_neg(-beta * r_l)
        for r_w, r_l in zip(chosen.tolist(), rejected.tolist())
    ]
    assert nca_loss(chosen, rejected, beta).tolist() == pytest.approx(expected, rel=1e-12)


def test_bco_pair_with_shift_and_its_running_mean():
    chosen, rejected = ratios()
    beta, delta = 0.1, 0.05
    expected = [
        softplus_neg(beta * r_w - delta) + softplus_neg(-(beta * r_l - delta))
        for r_w, r_l in zip(chosen.tolist(), rejected.tolist())
    ]
    assert bco_pair_loss(chosen, rejected, beta, delta).tolist() == pytest.approx(expected, rel=1e-12)
    # The registry's entry carries the shift: the mean over steps of each step's mean reward.
    bco = PAIRWISE_LOSSES["bco_pair"]

    def stats(r_w, r_l):  # log-ratios r_w and r_l (reference log-probs 0)
        r_w, r_l = torch.tensor(r_w), torch.tensor(r_l)
        return PairStats(r_w, r_l, torch.zeros_like(r_w), torch.zeros_like(r_l))

    _, state = bco(stats([10.0], [30.0]), 0.1, {}, update=True)  # rewards 1, 3: step mean 2
    assert state["shift"].item() == pytest.approx(2.0) and state["steps"].item() == 1
    loss, state = bco(stats([0.0, 0.0], [0.0, 40.0]), 0.1, {}, state, update=True)  # step mean 1
    assert state["shift"].item() == pytest.approx(1.5) and state["steps"].item() == 2  # mean of (2, 1)
    by_hand = [softplus_neg(0.0 - 1.5) + softplus_neg(-(0.0 - 1.5)), softplus_neg(-1.5) + softplus_neg(-(4.0 - 1.5))]
    assert loss.tolist() == pytest.approx(by_hand, rel=1e-6)
    _, frozen = bco(stats([100.0], [100.0]), 0.1, {}, state, update=False)  # evaluation reads, does not move
    assert frozen["shift"].item() == pytest.approx(1.5) and frozen["steps"].item() == 2


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


def test_apo_zero_by_hand():
    """APO-zero (arXiv:2408.06266, eq. 7) plus TRL's constant 1: 1 - sigma(beta r_w) + sigma(beta r_l)."""
    chosen, rejected = ratios()  # r_w = 1, 0.5, 0, 5; r_l = -1, 0.5, 0, -7
    beta = 0.5

    def sigma(x):
        return 1 / (1 + math.exp(-x))

    expected = [
        1 - sigma(beta * r_w) + sigma(beta * r_l) for r_w, r_l in zip([1.0, 0.5, 0.0, 5.0], [-1.0, 0.5, 0.0, -7.0])
    ]
    assert apo_zero_loss(chosen, rejected, beta).tolist() == pytest.approx(expected, rel=1e-12)
    assert apo_zero_loss(chosen, rejected, beta)[2].item() == 1.0  # at the reference: 1 - 1/2 + 1/2
    # unlike DPO it moves each response by its own ratio: equal ratios still get a gradient
    r_w, r_l = torch.tensor([0.3], requires_grad=True), torch.tensor([0.3], requires_grad=True)
    apo_zero_loss(r_w, r_l, beta).sum().backward()
    s = sigma(0.15)
    assert r_w.grad.item() == pytest.approx(-beta * s * (1 - s)) and r_l.grad.item() == pytest.approx(
        beta * s * (1 - s)
    )


def test_exo_pair_is_the_reverse_kl_to_the_smoothed_labels():
    """EXO-pref (arXiv:2402.00856): KL(q || p), q = (sigma(beta h), 1 - sigma(beta h)), p = (1 - eps, eps),
    written as sum q log(q / p) with plain floats."""
    chosen, rejected = ratios()
    beta, eps = 0.5, 0.01
    expected = []
    for h in h_values():
        q = 1 / (1 + math.exp(-beta * h))
        expected.append(q * math.log(q / (1 - eps)) + (1 - q) * math.log((1 - q) / eps))
    assert exo_pair_loss(chosen, rejected, beta, eps).tolist() == pytest.approx(expected, rel=1e-10)
    # zero exactly where the policy's pair distribution equals the labels: sigma(beta h) = 1 - eps
    h_star = torch.tensor([math.log((1 - eps) / eps) / beta], dtype=torch.float64)
    assert exo_pair_loss(h_star, torch.zeros(1, dtype=torch.float64), beta, eps).item() == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="epsilon"):
        exo_pair_loss(chosen, rejected, beta, 0.0)


def test_registry_entries_declare_reference_length_fields_and_defaults():
    assert {name for name, e in PAIRWISE_LOSSES.items() if not e.reference} == {"simpo", "sft"}
    assert {name for name, e in PAIRWISE_LOSSES.items() if e.length_normalized} == {"ipo", "rpo", "simpo", "sft"}
    assert PAIRWISE_LOSSES["inpo"].resolve(None) == {"tau": 0.0025}
    assert PAIRWISE_LOSSES["sem_dpo"].fields == ("semantic_distance",)
    assert PAIRWISE_LOSSES["exo_pair"].resolve(None) == {"epsilon": 1e-3}
    assert PAIRWISE_LOSSES["rpo"].resolve({"alpha": 2.0}) == {"alpha": 2.0}
    with pytest.raises(ValueError, match=r"loss_type 'rpo': unknown key 'rpo_alpha'; allowed: alpha \(default 1.0\)"):
        PAIRWISE_LOSSES["rpo"].resolve({"rpo_alpha": 1.0})
    with pytest.raises(ValueError, match="unknown key 'gamma'; allowed: none"):
        PAIRWISE_LOSSES["hinge"].resolve({"gamma": 1.0})
    with pytest.raises(ValueError, match="flip_rate must lie in"):
        PAIRWISE_LOSSES["robust"].resolve({"flip_rate": 0.5})
    with pytest.raises(ValueError, match="unknown loss_type 'dpoo'; choose one of apo_zero, bco_pair"):
        get_pairwise_loss("dpoo")


def test_registry_calls_its_function_on_the_stats_record():
    """Each entry on a stats record equals its pure function on log-ratios worked out here."""
    pw, pl, rw, rl = (torch.tensor(c, dtype=torch.float64) for c in zip(*PAIRS))
    tokens_w, tokens_l = torch.tensor([2.0, 1.0, 4.0, 5.0]), torch.tensor([1.0, 2.0, 4.0, 3.0])
    distance = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    s = PairStats(pw, pl, rw, rl, tokens_w, tokens_l, {"semantic_distance": distance})
    r_w, r_l = pw - rw, pl - rl
    cases = {
        "sigmoid": dpo_loss(r_w, r_l, 0.1),
        "ipo": ipo_loss(r_w / tokens_w, r_l / tokens_l, 0.1),
        "rpo": rpo_loss(r_w, r_l, -pw / tokens_w, 0.1, 1.0),
        "simpo": simpo_loss(pw / tokens_w, pl / tokens_l, 0.1, 0.5),
        "sem_dpo": sem_dpo_loss(r_w, r_l, distance, 0.1, 1.0),
        "apo_zero": apo_zero_loss(r_w, r_l, 0.1),
        "exo_pair": exo_pair_loss(r_w, r_l, 0.1, 1e-3),
    }
    for name, expected in cases.items():
        entry = PAIRWISE_LOSSES[name]
        got, state = entry(s, 0.1, entry.resolve(None))
        torch.testing.assert_close(got, expected, msg=name)
        assert state == {}
    with pytest.raises(KeyError, match="loss_type 'sem_dpo' needs the per-pair field"):
        PAIRWISE_LOSSES["sem_dpo"](PairStats(pw, pl, rw, rl), 0.1, {"alpha": 1.0})
    with pytest.raises(ValueError, match="needs reference log-probs"):
        PAIRWISE_LOSSES["sigmoid"](PairStats(pw, pl), 0.1, {"label_smoothing": 0.0})
