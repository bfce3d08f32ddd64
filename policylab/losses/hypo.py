"""HyPO's online term: the gradient of the reverse KL to the reference, estimated by REINFORCE
with the leave-one-out (RLOO) baseline on unlabeled samples of the policy.

Song et al., "The Importance of Online Data: Understanding Preference Fine-tuning via Coverage"
(NeurIPS 2024, arXiv 2406.01462): HyPO minimizes the offline DPO loss plus
``lambda * E_x KL(pi_theta(.|x) || pi_ref(.|x))``, the KL measured on fresh samples
``y ~ pi_theta(.|x)`` of the dataset's prompts (no label, no reward model).

The gradient of the KL (derived here; the score-function identity):

    KL(x)        = E_{y ~ pi} [ r(y) ],                     r(y) = log pi(y|x) - log pi_ref(y|x)
    grad KL(x)   = E_{y ~ pi} [ r(y) * grad log pi(y|x) ]   (the extra term E[grad log pi] = 0)

With ``k`` samples ``y_1..y_k`` of one prompt, the leave-one-out baseline
``b_i = mean_{j != i} r(y_j)`` is independent of ``y_i``, so

    g = (1/k) sum_i (r(y_i) - b_i) * grad log pi(y_i|x)

is an unbiased estimate of ``grad KL(x)`` with lower variance than plain REINFORCE (Ahmadian et
al. 2024, RLOO). :func:`rloo_kl_surrogate` returns the scalar whose gradient is ``g`` (the
coefficients ``r - b`` detached), averaged over prompts, and the Monte-Carlo KL estimate
``mean r`` (unbiased only when the samples come from ``pi`` itself: temperature 1, no top-k/p).
"""

from __future__ import annotations

from torch import Tensor


def leave_one_out_baseline(values: Tensor) -> Tensor:
    """``b[n, i] = mean_{j != i} values[n, j]`` over the last dimension (``k >= 2`` samples)."""
    k = values.shape[-1]
    if k < 2:
        raise ValueError(f"the leave-one-out baseline needs at least 2 samples per prompt, got {k}")
    return (values.sum(-1, keepdim=True) - values) / (k - 1)


def rloo_kl_surrogate(log_probs: Tensor, reference_log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """The RLOO surrogate of ``mean_x KL(pi(.|x) || pi_ref(.|x))`` and the KL estimate.

    Args:
        log_probs: ``[N, k]`` summed completion log-probs ``log pi_theta(y_i|x_n)`` of ``k`` samples
            of each of ``N`` prompts, drawn from ``pi_theta``; carries the gradient.
        reference_log_probs: ``[N, k]`` ``log pi_ref(y_i|x_n)`` of the same samples.

    Returns:
        ``(surrogate, kl)``: ``surrogate = mean_{n,i} (r - b)_{n,i} * log_probs_{n,i}`` with
        ``r = log_probs - reference_log_probs`` and ``b`` the leave-one-out baseline, both detached
        (its gradient is the RLOO estimate of the KL's gradient; its value is not the KL), and
        ``kl = mean r`` (detached), the Monte-Carlo estimate of the KL itself.
    """
    if log_probs.shape != reference_log_probs.shape or log_probs.ndim != 2:
        raise ValueError(
            f"log_probs and reference_log_probs must both be [prompts, samples], got "
            f"{tuple(log_probs.shape)} and {tuple(reference_log_probs.shape)}"
        )
    ratio = (log_probs - reference_log_probs).detach()
    advantage = ratio - leave_one_out_baseline(ratio)
    surrogate = (advantage * log_probs).mean()
    return surrogate, ratio.mean()
