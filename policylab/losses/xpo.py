"""The XPO loss (Xie et al., 2024, "Exploratory Preference Optimization: Harnessing Implicit
Q*-Approximation for Sample-Efficient RLHF", arXiv:2405.21046), as HF TRL's XPOTrainer computes it.

XPO is online DPO with one extra term. Per prompt ``x``: ``y ~ pi_theta``, ``y_ref ~ pi_ref``;
the judge orders them into ``(y_w, y_l)``; the loss (the paper's Algorithm 1, its policy update)

    loss = l_pair(y_w, y_l)  +  alpha * log pi_theta(y_ref | x),

where ``l_pair`` is DPO's ``-log sigma(beta [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)])`` (or IPO)
and ``log pi_theta(y_ref|x)`` is the summed log-prob of the reference's sample, whichever side of
the pair it is on. Minimising ``+alpha * log pi_theta(y_ref)`` lowers the policy's probability of
what the reference would say: the optimism (exploration) bonus that pushes the policy away from
the reference's responses toward ones it has not yet tried. TRL's default ``alpha = 1e-5``.
"""

from __future__ import annotations

from torch import Tensor


def xpo_loss(pair_loss: Tensor, reference_sample_log_probs: Tensor, alpha: float = 1e-5) -> Tensor:
    """The per-pair XPO loss ``l_pair + alpha * log pi_theta(y_ref | x)`` (see the module docstring).

    Args:
        pair_loss: ``[B]`` the pairwise loss of each judged pair (DPO sigmoid or IPO).
        reference_sample_log_probs: ``[B]`` the summed log-prob under the policy (with gradient)
            of the pair's sample drawn from the reference.
        alpha: the weight of the exploration term (TRL's 1e-5).
    """
    if pair_loss.shape != reference_sample_log_probs.shape:
        raise ValueError(
            f"pair_loss {tuple(pair_loss.shape)} and reference_sample_log_probs "
            f"{tuple(reference_sample_log_probs.shape)} must have the same shape [B]"
        )
    return pair_loss + alpha * reference_sample_log_probs
