"""Pairwise preference losses for language models: DPO and its variants, as pure functions.

Symbols (per pair of a prompt ``x`` with a chosen response ``y_w`` and a rejected ``y_l``):

- ``log pi(y|x)``: the summed token log-probabilities of the response under the policy,
  ``log pi_ref(y|x)`` under the frozen reference;
- the implicit rewards' log-ratios ``r_w = log pi(y_w|x) - log pi_ref(y_w|x)`` and
  ``r_l = log pi(y_l|x) - log pi_ref(y_l|x)`` (:func:`log_ratios`);
- their difference ``h = r_w - r_l`` (DPO's logit before scaling by ``beta``).

Every function returns the per-pair loss ``[B]``; the module averages. The formulas follow
the papers cited in each docstring; where HF TRL's ``DPOTrainer`` implements the same loss,
the numbers agree with it (``benchmarks/dpo_vs_trl.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def log_ratios(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor
) -> tuple[Tensor, Tensor]:
    """``(r_w, r_l)``: the policy-to-reference log-ratios of the chosen and rejected responses."""
    return policy_chosen - ref_chosen, policy_rejected - ref_rejected


def dpo_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1, label_smoothing: float = 0.0) -> Tensor:
    """DPO (Rafailov et al., 2023, eq. 7): ``-log sigma(beta * h)``.

    With ``label_smoothing = eps > 0`` it is conservative DPO (cDPO; Mitchell, 2023): the
    expected loss when the label is wrong with probability ``eps``,
    ``-(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``.
    """
    logits = beta * (chosen_ratio - rejected_ratio)
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def robust_dpo_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1, flip_rate: float = 0.1) -> Tensor:
    """rDPO (Chowdhury et al., 2024, "Provably Robust DPO", arXiv:2403.00409), for labels flipped with
    probability ``eps = flip_rate < 0.5``:
    ``[-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps)``.

    Unbiased: its expectation over the label noise equals the DPO loss on clean labels.
    ``flip_rate`` may be a tensor ``[B]`` (a per-pair rate).
    """
    flip_rate = torch.as_tensor(flip_rate, dtype=chosen_ratio.dtype, device=chosen_ratio.device)
    if (flip_rate < 0).any() or (flip_rate >= 0.5).any():
        raise ValueError(f"rDPO needs 0 <= flip_rate < 0.5, got {flip_rate.tolist()}")
    logits = beta * (chosen_ratio - rejected_ratio)
    return (-(1.0 - flip_rate) * F.logsigmoid(logits) + flip_rate * F.logsigmoid(-logits)) / (1.0 - 2.0 * flip_rate)


def ipo_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1) -> Tensor:
    """IPO (Azar et al., 2024, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences"):
    ``(h - 1 / (2 beta))^2``: regresses the log-ratio gap to a finite target instead of
    pushing it to infinity. As in TRL, pass log-ratios of *per-token averaged* log-probs."""
    return (chosen_ratio - rejected_ratio - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1) -> Tensor:
    """The hinge loss of RSO (Liu et al., 2024, "Statistical Rejection Sampling...", SLiC-style):
    ``max(0, 1 - beta * h)``."""
    return torch.relu(1.0 - beta * (chosen_ratio - rejected_ratio))


def nca_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1) -> Tensor:
    """NCA, pairwise form (Chen et al., 2024, "Noise Contrastive Alignment of Language Models"), with
    ``r = beta * log-ratio``: ``-log sigma(r_w) - 0.5 log sigma(-r_w) - 0.5 log sigma(-r_l)``.
    Unlike DPO it acts on each response's reward, not only on their difference."""
    r_w, r_l = beta * chosen_ratio, beta * rejected_ratio
    return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)


def bco_pair_loss(
    chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1, delta: Tensor | float = 0.0
) -> Tensor:
    """BCO on pairs (Jung et al., 2024, "Binary Classifier Optimization"): each response
    classified by its reward ``r = beta * log-ratio`` against the shift ``delta``:
    ``-log sigma(r_w - delta) - log sigma(-(r_l - delta))``. ``delta`` is the mean over the
    steps so far of each batch's mean reward, which the caller carries between steps
    (:data:`policylab.losses.pairwise.PAIRWISE_LOSSES` ``["bco_pair"]`` returns its new value)."""
    r_w, r_l = beta * chosen_ratio, beta * rejected_ratio
    return -F.logsigmoid(r_w - delta) - F.logsigmoid(-(r_l - delta))


def sppo_loss(
    chosen_ratio: Tensor,
    rejected_ratio: Tensor,
    beta: float = 0.001,
    chosen_win_rate: Tensor | float = 1.0,
    rejected_win_rate: Tensor | float = 0.0,
) -> Tensor:
    """SPPO (Wu et al., 2024, "Self-Play Preference Optimization") with ``eta = 1/beta``:
    ``(r_w - (P_w - 1/2) / beta)^2 + (r_l - (P_l - 1/2) / beta)^2``, where ``P`` is the estimated
    probability that the response beats the current policy. The defaults ``P_w = 1, P_l = 0``
    are TRL's ``sppo_hard``; the authors' code halves the sum (the same minimizer)."""
    return (chosen_ratio - (chosen_win_rate - 0.5) / beta) ** 2 + (
        rejected_ratio - (rejected_win_rate - 0.5) / beta
    ) ** 2


def rpo_loss(
    chosen_ratio: Tensor, rejected_ratio: Tensor, chosen_nll: Tensor, beta: float = 0.1, alpha: float = 1.0
) -> Tensor:
    """RPO (Pang et al., 2024, "Iterative Reasoning Preference Optimization"): DPO plus
    ``alpha`` times the chosen response's negative log-likelihood, length-normalized
    (``chosen_nll = -log pi(y_w|x) / |y_w|``, computed by the caller)."""
    return dpo_loss(chosen_ratio, rejected_ratio, beta) + alpha * chosen_nll


def simpo_loss(chosen_avg_logp: Tensor, rejected_avg_logp: Tensor, beta: float = 2.0, gamma: float = 0.5) -> Tensor:
    """SimPO (Meng et al., 2024, "Simple Preference Optimization"): reference-free, on
    length-normalized log-probs ``(1/|y|) log pi(y|x)``: ``-log sigma(beta * (avg_w - avg_l) - gamma)`` with the target
    reward margin ``gamma`` (the paper's defaults: beta 2.0 to 2.5, gamma/beta about 0.25 to 0.5)."""
    return -F.logsigmoid(beta * (chosen_avg_logp - rejected_avg_logp) - gamma)


def apo_zero_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1) -> Tensor:
    """APO-zero (D'Oosterlinck et al., 2024, "Anchored Preference Optimization and Contrastive
    Revisions", arXiv:2408.06266, eq. 7), for chosen responses better than the model's own:
    ``1 - sigma(beta r_w) + sigma(beta r_l)``, which raises the chosen response's likelihood and
    lowers the rejected one's, each anchored at the reference. The paper writes it without the
    constant 1 (the same gradient); with it the loss lies in ``[0, 2]``, as in TRL's ``apo_zero``."""
    return 1.0 - torch.sigmoid(beta * chosen_ratio) + torch.sigmoid(beta * rejected_ratio)


def exo_pair_loss(chosen_ratio: Tensor, rejected_ratio: Tensor, beta: float = 0.1, epsilon: float = 1e-3) -> Tensor:
    """EXO on pairs (Ji et al., 2024, "Towards Efficient Exact Optimization of Language Model
    Alignment", arXiv:2402.00856, EXO-pref): the reverse KL ``KL(q || p)`` from the policy's
    distribution over the two responses, ``q = softmax(beta r_w, beta r_l) = (sigma(beta h),
    sigma(-beta h))``, to the label distribution ``p = (1 - eps, eps)``:
    ``q_w (log q_w - log(1 - eps)) + q_l (log q_l - log eps)``. Unlike DPO's forward KL it is
    mode-seeking; ``eps`` must lie in ``(0, 1)`` (the paper's 1e-3)."""
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"EXO needs 0 < epsilon < 1, got {epsilon}")
    logits = beta * (chosen_ratio - rejected_ratio)
    log_q_w, log_q_l = F.logsigmoid(logits), F.logsigmoid(-logits)
    return log_q_w.exp() * (log_q_w - math.log1p(-epsilon)) + log_q_l.exp() * (log_q_l - math.log(epsilon))


def semantic_weight(prompt_embedding: Tensor, chosen_embedding: Tensor, alpha: float) -> Tensor:
    """Sem-DPO's per-pair weight (arXiv:2507.20133, 2025): ``exp(-alpha * d)`` with the
    cosine distance ``d = 1 - cos(e(x), e(y_w))`` between sentence embeddings of the prompt and
    the winning response; constant with respect to the policy (detached). The Sem-DPO loss is
    this weight times :func:`dpo_loss`."""
    return _distance_weight(1.0 - F.cosine_similarity(prompt_embedding, chosen_embedding, dim=-1), alpha)


def _distance_weight(distance: Tensor, alpha: float) -> Tensor:
    return torch.exp(-alpha * distance).detach()


def sem_dpo_loss(
    chosen_ratio: Tensor, rejected_ratio: Tensor, semantic_distance: Tensor, beta: float = 0.1, alpha: float = 1.0
) -> Tensor:
    """Sem-DPO from precomputed cosine distances ``d`` (``[B]``, as in :func:`semantic_weight`):
    ``exp(-alpha * d) * dpo_loss``."""
    return _distance_weight(semantic_distance, alpha) * dpo_loss(chosen_ratio, rejected_ratio, beta)
