"""Heads on a language model's final hidden states: pooling one token per row, the scalar head
of a Bradley-Terry reward model and the preference-embedding head of the General Preference
Model (GPM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gather_token(hidden_states: Tensor, index: Tensor) -> Tensor:
    """``hidden_states[b, index[b]]`` for every row: ``[B, T, H]`` and ``[B]`` -> ``[B, H]``."""
    if hidden_states.dim() != 3 or index.shape != hidden_states.shape[:1]:
        raise ValueError(
            f"expected hidden_states [B, T, H] and index [B], got {tuple(hidden_states.shape)} and {tuple(index.shape)}"
        )
    return hidden_states.gather(1, index.view(-1, 1, 1).expand(-1, 1, hidden_states.shape[-1])).squeeze(1)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Position of each row's last non-padding token (the last 1 of ``attention_mask`` ``[B, T]``),
    wherever the padding sits: right (the text datamodules), left (generation) or both."""
    length = attention_mask.shape[-1]
    return length - 1 - attention_mask.flip(-1).long().argmax(-1)


def last_token_hidden(hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
    """The final hidden state of each row's last non-padding token, ``[B, T, H]`` -> ``[B, H]``:
    the token that has read the whole prompt and response (the EOS the datamodules append), so
    what a reward head reads there depends on all of it and on no padding."""
    if attention_mask.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must match hidden_states "
            f"{tuple(hidden_states.shape[:2])} on [batch, length]"
        )
    return gather_token(hidden_states, last_token_index(attention_mask))


def prompt_end_index(completion_mask: Tensor) -> Tensor:
    """Position of each row's last prompt token: the one just before the first completion
    token of ``completion_mask`` ``[B, T]`` (1 on the completion only)."""
    return (completion_mask.long().argmax(-1) - 1).clamp(min=0)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that count only real tokens (0 at each row's first one), so a left-padded row
    is read as the same unpadded text by any positional encoding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ScalarRewardHead(nn.Module):
    """``r = w^T h``: a linear map of a final hidden state to a scalar reward, without bias
    (a constant shift cancels in every pairwise loss). Initialised with std ``1/(H + 1)`` as in
    OpenRLHF's reward models, so initial rewards are near 0."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1, bias=False)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1))

    def forward(self, hidden: Tensor) -> Tensor:
        """``[..., H]`` -> ``[...]``."""
        return self.linear(hidden).squeeze(-1)


class PreferenceEmbeddingHead(nn.Module):
    """GPM's two heads (Zhang et al., 2024, arXiv:2410.02197).

    - :meth:`embed`: the preference embedding ``v_{y|x} = W_v h(x, y) / ||W_v h(x, y)||`` in
      ``R^{2k}`` (unit L2 norm), from the final hidden state of the response's last token;
    - :meth:`eigenvalues`: the eigenvalue scale gate ``lambda(x) = softmax(W_lambda h(x))`` in
      ``R^k`` (non-negative, summing to one), from the final hidden state of the prompt's last
      token, so the operator ``R^>(x)`` depends on the prompt only. With ``k = 1`` the gate is the
      constant 1 (the fixed operator of the 2-dimensional model).

    ``dim`` is ``2k`` (``value_head_dim`` in the authors' code).
    """

    def __init__(self, hidden_size: int, dim: int = 2) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"the preference embedding dimension must be even (2k, k >= 1), got {dim}")
        self.dim = dim
        self.embedding = nn.Linear(hidden_size, dim, bias=False)
        self.gate = nn.Linear(hidden_size, dim // 2, bias=False)
        for layer in (self.embedding, self.gate):
            nn.init.normal_(layer.weight, std=1.0 / (hidden_size + 1))

    def embed(self, response_hidden: Tensor) -> Tensor:
        """``[..., H]`` -> unit-norm ``[..., 2k]``."""
        return F.normalize(self.embedding(response_hidden), p=2, dim=-1)

    def eigenvalues(self, prompt_hidden: Tensor) -> Tensor:
        """``[..., H]`` -> ``[..., k]``, non-negative and summing to one."""
        return torch.softmax(self.gate(prompt_hidden), dim=-1)
