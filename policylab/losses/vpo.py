"""VPO's loss: DPO regularized by the value of the implied reward (Cen et al., "Value-Incentivized
Preference Optimization: A Unified Approach to Online and Offline RLHF", ICLR 2025, arXiv 2405.19320).

VPO fits the reward by maximum likelihood under Bradley-Terry and adds the optimal value of that
reward, with a sign: ``+`` (optimism, online: prefer rewards under which the best policy does
well, which drives exploration) or ``-`` (pessimism, offline):

    r_hat = argmin_r  l(r; D) - sign * alpha * ( max_pi J(r, pi) - E_{x ~ D, y ~ pi_cal}[ r(x, y) ] ),
    J(r, pi) = E_{x, y ~ pi}[ r(x, y) ] - beta * KL(pi || pi_ref).

The value term is taken relative to the reward's mean under a calibration policy ``pi_cal``: the
Bradley-Terry likelihood does not see a shift of ``r``, the value does, and fixing
``E_{pi_cal}[r] = 0`` removes that freedom (the paper's "reward calibration"). With the reward of a
policy, ``r(x, y) = beta log pi(y|x) / pi_ref(y|x) + beta log Z(x)``, the optimal value is
``max_pi J(r, pi) = beta E_x[log Z(x)]``, so the bracket is ``-beta E_{x, y ~ pi_cal}[log pi(y|x) / pi_ref(y|x)]``
(``log Z`` cancels) and the objective over policies is

    L_VPO(theta) = L_DPO(theta) + sign * alpha * beta * E_{x, y ~ pi_cal}[ log pi_theta(y|x) / pi_ref(y|x) ].

Online (``sign = +1``) the term pushes down the likelihood of calibration samples (with
``pi_cal = pi_ref``: away from the reference, the shape of XPO's exploration bonus); offline
(``sign = -1``) it keeps likelihood on them. This derivation is ours (the paper's text and
equation numbers were not available to check); the loss here averages both terms over their
samples (DPO over the batch's pairs, the value term over its calibration samples), so ``alpha``
is a per-sample weight.
"""

from __future__ import annotations

from torch import Tensor

from policylab.losses.preference import dpo_loss

#: the sign of the value term: optimism (online) or pessimism (offline)
VALUE_SIGNS = {"optimistic": 1.0, "pessimistic": -1.0}


def value_regularizer(calibration_ratio: Tensor, beta: float, alpha: float, value_sign: str = "optimistic") -> Tensor:
    """``sign * alpha * beta * mean(log pi_theta(y|x) / pi_ref(y|x))`` over calibration samples
    ``y ~ pi_cal`` (``calibration_ratio``: their summed log-ratios, ``[C]``); a scalar."""
    if value_sign not in VALUE_SIGNS:
        raise ValueError(f"value_sign must be one of {', '.join(VALUE_SIGNS)}, got {value_sign!r}")
    if alpha < 0:
        raise ValueError(f"alpha (the weight of the value term) must be >= 0, got {alpha}")
    return VALUE_SIGNS[value_sign] * alpha * beta * calibration_ratio.mean()


def vpo_loss(
    chosen_ratio: Tensor,
    rejected_ratio: Tensor,
    calibration_ratio: Tensor,
    beta: float = 0.1,
    alpha: float = 0.01,
    value_sign: str = "optimistic",
) -> Tensor:
    """``mean(DPO loss of the pairs) + value_regularizer(calibration_ratio)`` (a scalar): the
    log-ratios of chosen and rejected responses ``[B]`` and of calibration samples ``[C]``."""
    return dpo_loss(chosen_ratio, rejected_ratio, beta).mean() + value_regularizer(
        calibration_ratio, beta, alpha, value_sign
    )
