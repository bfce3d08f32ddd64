"""What a sampler returns: K completions per prompt as one padded batch, ready for the trainer's
forward (``input_ids``, ``attention_mask``, ``completion_mask``) and with the per-token log-probs
of the distribution they were drawn from."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


class SamplingError(ValueError):
    """Bad input to a sampler (a prompt that does not fit the context, bad settings), or a backend
    that cannot run here. The message names the prompt / setting and says what to do."""


@dataclass
class Completions:
    """``N`` prompts x ``K`` samples as ``N*K`` rows; the rows of prompt ``i`` are ``i*K .. i*K+K-1``.

    Row layout (``T = P + C``): the prompt's tokens LEFT padded to ``P``, then the completion's
    tokens RIGHT padded to ``C`` with the pad id. ``completion_mask`` is 1 on the completion's
    tokens up to and including the EOS token (or the token that completed a stop string) and 0
    after it; ``attention_mask`` is 1 on real prompt tokens and on completion tokens.
    ``token_log_probs[r, t]`` is ``log pi_sample(input_ids[r, t] | input_ids[r, :t])`` on
    completion tokens (0 elsewhere), where ``pi_sample`` is the distribution the token was drawn
    from: the policy / reference / geometric mixture logits divided by the temperature, then
    truncated by top-k and top-p and renormalized.

    Beyond the shared interface: ``num_truncated_prompts`` (prompts cut from the left to
    ``max_prompt_length``), ``generated_tokens`` (sum of the completion lengths) and ``seconds``
    (wall time of the sampling call) so callers can log generation tokens/s.
    """

    prompts: list[str]
    prompt_index: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    token_log_probs: Tensor
    texts: list[str]
    finished: Tensor
    num_truncated_prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def num_samples(self) -> int:
        """K, the completions per prompt."""
        return len(self.texts) // max(len(self.prompts), 1)

    @property
    def num_unfinished(self) -> int:
        """Rows that hit ``max_new_tokens`` without EOS or a stop string."""
        return int((~self.finished).sum())

    @property
    def completion_lengths(self) -> Tensor:
        """``[N*K]`` completion tokens per row (the EOS counts)."""
        return self.completion_mask.sum(-1)

    @property
    def prompt_length(self) -> int:
        """``P``: the column where completions start (every row's first generated token is there)."""
        return int(self.completion_mask.any(0).float().argmax())

    @property
    def completion_ids(self) -> Tensor:
        """``[N*K, C]``: the completion columns of ``input_ids`` (pad after each completion's end)."""
        return self.input_ids[:, self.prompt_length :]

    def sequence_log_probs(self) -> Tensor:
        """``[N*K]``: log-prob of each completion under the sampling distribution (sum over its tokens)."""
        return (self.token_log_probs * self.completion_mask.to(self.token_log_probs.dtype)).sum(-1)

    def grouped(self, values: Tensor) -> Tensor:
        """``[N*K, ...] -> [N, K, ...]`` (rows of one prompt are adjacent)."""
        return values.reshape(len(self.prompts), self.num_samples, *values.shape[1:])

    def to(self, device: torch.device | str) -> Completions:
        """A copy with every tensor on ``device`` (e.g. ``"cpu"`` for a checkpoint)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Completions(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in values.items()})

    def state_dict(self) -> dict:
        """Plain tensors, strings and numbers (CPU), loadable with ``torch.load(weights_only=True)``."""
        return {
            f.name: (v.cpu() if isinstance(v, Tensor) else v) for f in fields(self) for v in [getattr(self, f.name)]
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Completions:
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})
