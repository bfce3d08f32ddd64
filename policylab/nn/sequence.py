"""Sequence log-probabilities of completions under a causal LM: the quantity every pairwise
preference loss is built from."""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from policylab.nn.heads import position_ids


def token_log_probs(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log-probabilities of ``input_ids[:, 1:]`` and the mask they count on, both ``[B, T - 1]``.

    ``logits`` ``[B, T, V]`` are the model's outputs for ``input_ids`` ``[B, T]``; token ``t`` is
    predicted by the logits at ``t - 1``. ``completion_mask`` ``[B, T]`` is 1 on the tokens that
    count (the completion, never the prompt or padding); off it the log-probability is 0, so
    padding cannot leak into a sum wherever it sits. Computed as ``logit[token] - logsumexp(logits)``
    in float32 without materializing the full ``[B, T, V]`` log-softmax.
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
    return (token_logits - torch.logsumexp(logits, dim=-1)) * mask, mask


def completion_log_probs(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of the completion tokens and their count, per row: the sums of
    :func:`token_log_probs` (``(sum_log_prob [B], num_tokens [B])``; the mean per token is their ratio)."""
    per_token, mask = token_log_probs(logits, input_ids, completion_mask)
    return per_token.sum(-1), mask.sum(-1)


def _forward_takes(model, argument: str) -> bool:
    """Whether ``model`` (or the model under a PEFT wrapper) takes ``argument`` in its forward
    (HF's ``logits_to_keep``, ``position_ids``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in _forward_parameters(type(base))


@functools.cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    # Once per class: signature inspection is too slow for every forward of a training step.
    return frozenset(inspect.signature(model_class.forward).parameters)


def model_completion_log_probs(
    model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`completion_log_probs` of a causal LM's forward over ``input_ids``, computing the
    LM head only from the position before the batch's first completion token on (HF's
    ``logits_to_keep``, where the model takes it): prompt positions never become ``[V]``-wide
    logits, which for long prompts and large vocabularies is most of the step's memory."""
    kwargs = _position_kwargs(model, attention_mask)
    start = 0
    if _forward_takes(model, "logits_to_keep"):
        # Every row's completion starts at or after the earliest one; logits at t predict t+1.
        first = int(completion_mask.any(0).float().argmax())
        start = max(first - 1, 0)
        kwargs["logits_to_keep"] = input_ids.shape[1] - start
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits
    return completion_log_probs(logits, input_ids[:, start:], completion_mask[:, start:])


def model_token_log_probs(
    model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`token_log_probs` of a causal LM's forward over whole rows (``[B, T - 1]`` each, the
    positions as :func:`model_completion_log_probs` numbers them); their row sums are its values.
    For losses that weight each token (Nash-MD's per-token KL term)."""
    kwargs = _position_kwargs(model, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits
    return token_log_probs(logits, input_ids, completion_mask)


def _position_kwargs(model, attention_mask: Tensor) -> dict[str, Tensor]:
    # Positions count real tokens only, as generation numbers them: left-padded rows (the
    # sampler's) read like unpadded ones under learned position embeddings too.
    return {"position_ids": position_ids(attention_mask)} if _forward_takes(model, "position_ids") else {}
