"""The Nash-MD policy-gradient loss (Munos et al., 2023, "Nash Learning from Human Feedback",
arXiv:2312.00886), as HF TRL's NashMDTrainer computes it.

Symbols, per prompt ``x``: ``y ~ pi_theta`` (the policy's sample), ``y'`` a sample of the
geometric mixture ``pi^alpha ∝ pi_theta^(1 - alpha) * mu^alpha`` of the policy and the reference
``mu = pi_ref`` (the paper's regularized policy of the Nash-MD update), and
``p = P(y > y' | x)`` the preference model's probability that ``y`` beats ``y'``. Nash-MD-PG
(the paper's policy-gradient form for deep networks) ascends
``E_y[P(y > pi^alpha)] - beta KL(pi_theta || mu)`` by the REINFORCE estimate

    grad  =  E_{y ~ pi_theta} [ (p - 1/2) grad log pi_theta(y|x) ]  -  beta grad KL(pi_theta || mu),

where ``1/2`` is the control variate (``P(y > y') = 1/2`` when both come from the same policy).
TRL's loss, whose gradient is the negative of that estimate:

    loss(y) = beta * sum_t sg[log pi_theta(y_t|.) - log mu(y_t|.)] * log pi_theta(y_t|.)
              - (p - 1/2) * sum_t log pi_theta(y_t|.)

(``sg``: no gradient). The KL term is per token: every token's log-prob is weighted by that
token's own log-ratio, not the sequence's, and only the policy's log-probs carry a gradient. Its
expectation is the gradient of the per-position KLs ``sum_t KL(pi_theta(.|y_<t) || mu(.|y_<t))``
with the prefixes' distribution held fixed; the sequence KL's gradient would also weight each
token by the log-ratios of the tokens after it. For one-token responses the two are the same.
"""

from __future__ import annotations

from torch import Tensor


def nash_md_loss(
    policy_token_log_probs: Tensor,
    reference_token_log_probs: Tensor,
    completion_mask: Tensor,
    probability: Tensor,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Nash-MD-PG's loss of the policy's samples ``y`` (see the module docstring).

    Args:
        policy_token_log_probs: ``[B, T]`` ``log pi_theta(y_t | x, y_<t)`` (with gradient).
        reference_token_log_probs: ``[B, T]`` ``log mu(y_t | x, y_<t)`` of the same tokens.
        completion_mask: ``[B, T]`` 1 on the completion's tokens, 0 on the prompt and padding.
        probability: ``[B]`` ``p = P(y > y' | x)`` against the mixture's sample (no gradient).
        beta: the KL coefficient (TRL's 0.1).

    Returns:
        ``(loss [B], score [B], kl [B])``: the per-sample loss, the preference term
        ``(p - 1/2) log pi_theta(y|x)``, and the summed log-ratio
        ``log pi_theta(y|x) - log mu(y|x)`` (detached: the single-sample KL estimate).
    """
    if policy_token_log_probs.shape != reference_token_log_probs.shape or (
        policy_token_log_probs.shape != completion_mask.shape
    ):
        raise ValueError(
            f"policy log-probs {tuple(policy_token_log_probs.shape)}, reference log-probs "
            f"{tuple(reference_token_log_probs.shape)} and completion_mask {tuple(completion_mask.shape)} must agree"
        )
    if probability.shape != policy_token_log_probs.shape[:1]:
        expected = policy_token_log_probs.shape[0]
        raise ValueError(f"probability must have shape [{expected}], got {tuple(probability.shape)}")
    mask = completion_mask.to(policy_token_log_probs.dtype)
    log_pi = policy_token_log_probs * mask
    log_ratio = (policy_token_log_probs - reference_token_log_probs).detach() * mask
    score = (probability.detach().to(log_pi.dtype) - 0.5) * log_pi.sum(-1)
    kl_reinforce = (log_ratio * log_pi).sum(-1)
    return beta * kl_reinforce - score, score, log_ratio.sum(-1)
