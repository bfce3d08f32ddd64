"""Sequence log-probabilities of completions under a causal LM: the quantity every pairwise
preference loss is built from."""

from __future__ import annotations

import torch
from torch import Tensor


def completion_log_probs(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of the completion tokens and their count, per row.

    ``logits`` ``[B, T, V]`` are the model's outputs for ``input_ids`` ``[B, T]``; token ``t`` is
    predicted by the logits at ``t - 1``. ``completion_mask`` ``[B, T]`` is 1 on the tokens that
    count (the completion, never the prompt or padding), so padding cannot leak into the sum
    wherever it sits. Returns ``(sum_log_prob [B], num_tokens [B])``; the mean per token is
    their ratio. Computed as ``logit[token] - logsumexp(logits)`` in float32 without
    materializing the full ``[B, T, V]`` log-softmax.
    """
    if logits.shape[:2] != input_ids.shape or completion_mask.shape != input_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, input_ids {tuple(input_ids.shape)} and completion_mask "
            f"{tuple(completion_mask.shape)} must agree on [batch, length]"
        )
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].to(logits.dtype)
    token_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    token_log_probs = token_logits - torch.logsumexp(logits, dim=-1)
    return (token_log_probs * mask).sum(-1), mask.sum(-1)
