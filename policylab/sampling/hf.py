"""Sampling completions from a Hugging Face causal LM (CPU or GPU): the default backend of the
online methods.

Decoding is a token-by-token loop over the model's own forward with its KV cache (HF's
``past_key_values``) rather than ``model.generate``, for two reasons: ``generate`` fills every
setting left unset from the checkpoint's ``generation_config.json`` (a hub model's
``repetition_penalty``, ``min_p``, ...) and appends its sampling warpers after any custom
logits processor, so the distribution it samples from is not the one a processor could report
log-probs of; and the geometric mixture of Nash-MD needs a second model advanced in lock-step
with its own cache. Owning the loop makes the reported per-token log-probs exactly those of the
distribution each token was drawn from (the test checks them against a full forward).

Per step: logits of the policy (or the reference, or ``alpha * ref + (1 - alpha) * policy``),
divided by the temperature, truncated to the top-k, then to the top-p nucleus (the order of
HF's and vLLM's warpers), renormalized; a token is drawn with a ``torch.Generator`` seeded from
``seed`` (the global RNG is never touched), and its log-prob under that truncated distribution
is recorded. TRL's OnlineDPO samples with temperature 0.9, top_p 1, top_k 0 (off) and
``max_new_tokens`` 64; the defaults here are generic (temperature 1: the policy itself, whose
log-probs are what the losses compare) and a config sets TRL's where a comparison needs them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from policylab.sampling.completions import Completions, SamplingError


@contextlib.contextmanager
def eval_mode(*models: nn.Module | None) -> Iterator[None]:
    """Every module of ``models`` in eval mode for the block, then each one's own mode restored
    (a frozen part that was in eval mode inside a training model stays so)."""
    modes = [(m, m.training) for model in models if model is not None for m in model.modules()]
    for model in models:
        if model is not None:
            model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _forward_takes(model_class: type) -> tuple[bool, bool, str]:
    """Whether the class's forward takes ``position_ids`` and ``logits_to_keep``, and the name of
    its KV-cache argument (``cache`` from transformers 5.x on, ``past_key_values`` before); once per class."""
    parameters = inspect.signature(model_class.forward).parameters
    cache = "cache" if "cache" in parameters else "past_key_values"
    return "position_ids" in parameters, "logits_to_keep" in parameters, cache


def context_length(model: nn.Module) -> int | None:
    """The model's ``max_position_embeddings`` (or ``n_positions``), None when it has none."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def eos_token_ids(tokenizer, model: nn.Module | None = None) -> list[int]:
    """The tokenizer's EOS id and those of the model's ``generation_config`` (chat models end
    turns with their own token, e.g. ``<|im_end|>``)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif isinstance(config_eos, (list, tuple)):
        ids.update(int(i) for i in config_eos)
    if not ids:
        raise SamplingError("the tokenizer has no eos_token and the model's generation_config names none: set one")
    return sorted(ids)


def warp_logits(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """``logits / temperature``, then every token outside the top-k and outside the smallest set
    whose probability reaches ``top_p`` set to -inf (``top_k=0``, ``top_p=1``: no truncation).
    ``log_softmax`` of the result is the sampling distribution."""
    logits = logits.float()
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        # the most likely token always stays (mass before it is 0 < top_p)
        remove = mass_before >= top_p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def first_stop(text: str, stop_strings: Sequence[str]) -> int:
    """Index in ``text`` where the earliest stop string starts, -1 if none occurs."""
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(found) if found else -1


def encode_prompts(tokenizer, prompts: list[str], max_prompt_length: int | None) -> tuple[list[list[int]], int]:
    """Token ids of each prompt (with the tokenizer's special tokens, e.g. BOS), cut from the
    LEFT to ``max_prompt_length`` (the end of a prompt is what the completion continues);
    returns the ids and how many prompts were cut."""
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise SamplingError(f"prompts must be a non-empty list of strings, got {type(prompts).__name__}")
    ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    truncated = 0
    if max_prompt_length is not None:
        for i, row in enumerate(ids):
            if len(row) > max_prompt_length:
                ids[i] = row[-max_prompt_length:]
                truncated += 1
    for i, row in enumerate(ids):
        if not row:
            raise SamplingError(f"prompt {i} ({prompts[i]!r}) has no tokens and the tokenizer adds no BOS: give text")
    return ids, truncated


def check_context(ids: list[list[int]], max_new_tokens: int, model: nn.Module, which: str) -> None:
    """SamplingError when a prompt plus ``max_new_tokens`` exceeds the model's context."""
    limit = context_length(model)
    if limit is None:
        return
    for i, row in enumerate(ids):
        if len(row) + max_new_tokens > limit:
            raise SamplingError(
                f"prompt {i} has {len(row)} tokens + max_new_tokens {max_new_tokens} > the {which}'s context of "
                f"{limit} (max_position_embeddings): set max_prompt_length <= {limit - max_new_tokens} (cuts prompts "
                "from the left) or lower max_new_tokens"
            )


class SamplingSettings:
    """What every sampler backend takes and checks: the tokenizer (an object or a name/folder
    ``AutoTokenizer`` loads), ``max_new_tokens``, ``temperature`` (0: greedy), ``top_p``, ``top_k``
    (0: off), ``stop_strings``, ``batch_size`` (prompts per batch), ``max_prompt_length``; a bad
    value stops with a :class:`SamplingError` naming it."""

    def __init__(
        self,
        tokenizer,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: Sequence[str] = (),
        batch_size: int = 64,
        max_prompt_length: int | None = None,
    ):
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        checks = (
            ("max_new_tokens", max_new_tokens, max_new_tokens >= 1, ">= 1"),
            ("temperature", temperature, temperature >= 0, ">= 0 (0: greedy)"),
            ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]"),
            ("top_k", top_k, top_k >= 0, ">= 0 (0: off)"),
            ("batch_size", batch_size, batch_size >= 1, ">= 1"),
            (
                "max_prompt_length",
                max_prompt_length,
                max_prompt_length is None or max_prompt_length >= 1,
                ">= 1 or None",
            ),
        )
        for name, value, ok, want in checks:
            if not ok:
                raise SamplingError(f"{type(self).__name__} {name}={value!r}: must be {want}")
        if isinstance(stop_strings, str) or any(not isinstance(s, str) or not s for s in stop_strings):
            raise SamplingError(
                f"{type(self).__name__} stop_strings={stop_strings!r}: must be a list of non-empty strings"
            )
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.stop_strings = tuple(stop_strings)
        self.batch_size = int(batch_size)
        self.max_prompt_length = max_prompt_length
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise SamplingError("the tokenizer has neither a pad_token nor an eos_token: set tokenizer.pad_token")
        self.pad_token_id = int(pad)


class HFSampler(SamplingSettings):
    """K completions per prompt from a HF causal LM (or a PEFT-wrapped one), with per-token
    log-probs under the sampling distribution. See the module docstring for what a step does.

    - ``batch_size``: prompts per decoding batch (each batch has ``batch_size * K`` rows);
      prompts are LEFT padded in a batch, position ids count real tokens only.
    - Ends a row at an EOS token (the tokenizer's, and the model's ``generation_config`` ones)
      or when its decoded text contains one of ``stop_strings``: the completion keeps the tokens
      up to the one that completed the stop string, its text is cut before the stop string.
      Rows that reach ``max_new_tokens`` first have ``finished=False`` (counted by
      ``Completions.num_unfinished``; the caller decides: TRL's ``missing_eos_penalty``, drop, keep).
    - Prompt longer than ``max_prompt_length``: cut from the left and counted
      (``Completions.num_truncated_prompts``). Prompt + ``max_new_tokens`` longer than the
      model's ``max_position_embeddings``: :class:`SamplingError` naming the prompt index and
      the lengths (nothing is cut silently to fit the context).
    - ``temperature=0``: greedy decoding; its log-probs are then those of the untempered model.
    - Same ``seed``, prompts and settings (``batch_size`` included): same completions.
    """

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        prompts: list[str],
        num_samples: int = 1,
        seed: int | None = None,
        reference: nn.Module | None = None,
        mixture_coef: float = 0.0,
    ) -> Completions:
        """``num_samples`` completions of each prompt from ``model`` (``mixture_coef=0``), from
        ``reference`` (``mixture_coef=1``) or from the geometric mixture
        ``softmax(alpha * logits_ref + (1 - alpha) * logits_model)`` with ``alpha = mixture_coef``
        (Nash-MD, Munos et al. 2023, eq. 8; TRL's GeometricMixtureWrapper). Both models are put
        in eval mode for the call and given back in their own mode."""
        start = time.perf_counter()
        if num_samples < 1:
            raise SamplingError(f"num_samples={num_samples}: must be >= 1")
        if not 0.0 <= mixture_coef <= 1.0:
            raise SamplingError(f"mixture_coef={mixture_coef}: must be in [0, 1] (0: the model, 1: the reference)")
        if mixture_coef > 0 and reference is None:
            raise SamplingError(f"mixture_coef={mixture_coef} samples from the reference too: pass reference=")
        policy = model if mixture_coef < 1 else None
        ref = reference if mixture_coef > 0 else None
        ids, truncated = encode_prompts(self.tokenizer, prompts, self.max_prompt_length)
        for which, m in (("model", policy), ("reference", ref)):
            if m is not None:
                check_context(ids, self.max_new_tokens, m, which)
        first = policy if policy is not None else ref
        device = next(first.parameters()).device
        generator = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
        eos = torch.tensor(eos_token_ids(self.tokenizer, first), device=device)
        batches = []
        with eval_mode(policy, ref):
            for begin in range(0, len(ids), self.batch_size):
                batches.append(
                    self._decode(
                        ids[begin : begin + self.batch_size],
                        num_samples,
                        policy,
                        ref,
                        mixture_coef,
                        generator,
                        eos,
                        device,
                    )
                )
        completions = completions_from_batches(
            prompts, num_samples, ids, batches, self.pad_token_id, self.tokenizer, self.stop_strings, device
        )
        completions.num_truncated_prompts = truncated
        completions.seconds = time.perf_counter() - start
        return completions

    def _next_logits(self, models, caches, input_ids, attention_mask, position_ids) -> list[Tensor]:
        logits = []
        for i, m in enumerate(models):
            takes_positions, takes_keep, cache_name = _forward_takes(type(_base(m)))
            kwargs = {cache_name: caches[i]}
            if takes_positions:
                kwargs["position_ids"] = position_ids
            if takes_keep:
                kwargs["logits_to_keep"] = 1
            out = m(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **kwargs)
            caches[i] = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            logits.append(out.logits[:, -1].float())
        return logits

    def _decode(self, prompt_ids: list[list[int]], k: int, policy, ref, alpha, generator, eos, device):
        """``k`` completions of each prompt of one batch (rows ``i*k .. i*k+k-1``): the completion ids
        ``[B*k, S]`` (pad after each row's end), their log-probs ``[B*k, S]`` (0 after the end), the
        lengths ``[B*k]`` and whether each row finished ``[B*k]``, ``S`` the longest completion."""
        width, batch = max(len(r) for r in prompt_ids), len(prompt_ids) * k
        padded = [[self.pad_token_id] * (width - len(row)) + row for row in prompt_ids]
        input_ids = torch.tensor(padded, dtype=torch.long, device=device).repeat_interleave(k, 0)
        prompt_lengths = torch.tensor([len(row) for row in prompt_ids], device=device).repeat_interleave(k, 0)
        # The attention mask of every step, filled in advance (ones after the prompt): step s reads its first columns.
        full_mask = torch.ones((batch, width + self.max_new_tokens), dtype=torch.long, device=device)
        full_mask[:, :width] = torch.arange(width, device=device) >= width - prompt_lengths[:, None]
        attention_mask = full_mask[:, :width]
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        models = [m for m in (policy, ref) if m is not None]
        caches = [None] * len(models)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        lengths = torch.full((batch,), self.max_new_tokens, dtype=torch.long, device=device)
        tokens = torch.full((batch, self.max_new_tokens), self.pad_token_id, dtype=torch.long, device=device)
        log_probs = torch.zeros((batch, self.max_new_tokens), device=device)
        steps = self.max_new_tokens
        for step in range(self.max_new_tokens):
            step_input = input_ids if step == 0 else tokens[:, step - 1 : step]
            logits = self._next_logits(models, caches, step_input, attention_mask, position_ids)
            if len(logits) == 2:  # geometric mixture: alpha * reference + (1 - alpha) * policy
                logits = alpha * logits[1] + (1 - alpha) * logits[0]
            else:
                logits = logits[0]
            if self.temperature == 0.0:
                token = logits.argmax(-1)
                log_p = torch.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(-1)
            else:
                log_pi = torch.log_softmax(warp_logits(logits, self.temperature, self.top_k, self.top_p), -1)
                token = torch.multinomial(log_pi.exp(), 1, generator=generator).squeeze(-1)
                log_p = log_pi.gather(-1, token[:, None]).squeeze(-1)
            tokens[:, step] = token.masked_fill_(done, self.pad_token_id)
            log_probs[:, step] = log_p.masked_fill_(done, 0.0)
            ended = ~done & torch.isin(token, eos)
            if self.stop_strings:
                ended |= self._stopped(tokens[:, : step + 1], ~done & ~ended)
            lengths.masked_fill_(ended, step + 1)
            done |= ended
            if bool(done.all()):
                steps = step + 1
                break
            attention_mask = full_mask[:, : width + step + 1]
            position_ids = position_ids[:, -1:] + 1
        return tokens[:, :steps], log_probs[:, :steps], lengths, done

    def _stopped(self, generated: Tensor, candidates: Tensor) -> Tensor:
        """Rows among ``candidates`` whose decoded completion now contains a stop string."""
        hit = torch.zeros_like(candidates)
        rows = candidates.nonzero().flatten().tolist()
        if rows:
            texts = self.tokenizer.batch_decode(generated[rows].tolist(), skip_special_tokens=True)
            for row, text in zip(rows, texts, strict=True):
                hit[row] = first_stop(text, self.stop_strings) >= 0
        return hit


def completions_from_batches(
    prompts: list[str],
    num_samples: int,
    prompt_ids: list[list[int]],
    batches: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    pad_token_id: int,
    tokenizer,
    stop_strings: Sequence[str],
    device: torch.device,
) -> Completions:
    """:func:`assemble` of decoded batches (``(completion ids, log-probs, lengths, finished)`` as
    :meth:`HFSampler._decode` gives them, rows ``i*K .. i*K+K-1`` of prompt ``i``), without
    splitting them into rows first."""
    width = max(b[0].shape[1] for b in batches)
    completion_ids = torch.cat(
        [nn.functional.pad(b[0], (0, width - b[0].shape[1]), value=pad_token_id) for b in batches]
    )
    log_probs = torch.cat([nn.functional.pad(b[1].float(), (0, width - b[1].shape[1])) for b in batches])
    lengths = torch.cat([b[2] for b in batches])
    finished = torch.cat([b[3] for b in batches]).bool()
    return _completions(
        prompts,
        num_samples,
        prompt_ids,
        completion_ids,
        log_probs,
        lengths,
        finished,
        pad_token_id,
        tokenizer,
        stop_strings,
        device,
    )


def assemble(
    prompts: list[str],
    num_samples: int,
    rows: list[tuple[list[int], Tensor, Tensor, bool]],
    pad_token_id: int,
    tokenizer,
    stop_strings: Sequence[str],
    device: torch.device,
) -> Completions:
    """One :class:`Completions` from per-row (prompt ids, completion ids, token log-probs,
    finished): prompts LEFT padded to the longest, completions RIGHT padded to the longest,
    texts decoded without special tokens and cut before the first stop string."""
    from torch.nn.utils.rnn import pad_sequence

    completions = [r[1].long().cpu() for r in rows]
    completion_ids = pad_sequence(completions, batch_first=True, padding_value=pad_token_id)
    log_probs = pad_sequence([r[2].float().cpu() for r in rows], batch_first=True, padding_value=0.0)
    lengths = torch.tensor([len(c) for c in completions])
    finished = torch.tensor([bool(r[3]) for r in rows])
    prompt_ids = [list(r[0]) for r in rows]
    return _completions(
        prompts,
        num_samples,
        prompt_ids,
        completion_ids,
        log_probs,
        lengths,
        finished,
        pad_token_id,
        tokenizer,
        stop_strings,
        device,
        rows_per_prompt=1,
    )


def _completions(
    prompts,
    num_samples,
    prompt_ids,
    completion_ids,
    log_probs,
    lengths,
    finished,
    pad_token_id,
    tokenizer,
    stop_strings,
    device,
    rows_per_prompt=None,
) -> Completions:
    """The :class:`Completions` of right-padded ``completion_ids`` / ``log_probs`` ``[R, C]`` (any
    device), their ``lengths`` and ``finished`` ``[R]``, and the prompts' token ids (one list per
    row, or per prompt when each prompt's ``num_samples`` rows share it: ``rows_per_prompt=None``)."""
    repeat = num_samples if rows_per_prompt is None else rows_per_prompt
    prompt_lengths = torch.tensor([len(p) for p in prompt_ids]).repeat_interleave(repeat)
    prompt_width = int(prompt_lengths.max())
    prompt_part = torch.tensor([[pad_token_id] * (prompt_width - len(p)) + list(p) for p in prompt_ids])
    prompt_part = prompt_part.repeat_interleave(repeat, 0)
    completion_ids, log_probs, lengths = completion_ids.long().cpu(), log_probs.float().cpu(), lengths.cpu()
    completion_width = completion_ids.shape[1]
    prompt_mask = torch.arange(prompt_width) >= (prompt_width - prompt_lengths)[:, None]
    completion_part = torch.arange(completion_width) < lengths[:, None]
    input_ids = torch.cat([prompt_part, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_part], 1).long()
    completion_mask = torch.cat([torch.zeros_like(prompt_mask), completion_part], 1).long()
    token_log_probs = torch.cat([torch.zeros(prompt_mask.shape), log_probs * completion_part], 1)
    rows = [row[:n] for row, n in zip(completion_ids.tolist(), lengths.tolist(), strict=True)]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    texts = [t[: first_stop(t, stop_strings)] if first_stop(t, stop_strings) >= 0 else t for t in texts]
    prompt_index = torch.arange(len(prompts)).repeat_interleave(num_samples)
    return Completions(
        prompts=list(prompts),
        prompt_index=prompt_index.to(device),
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        completion_mask=completion_mask.to(device),
        token_log_probs=token_log_probs.to(device),
        texts=texts,
        finished=finished.cpu().to(device),
        generated_tokens=int(completion_mask.sum()),
    )
