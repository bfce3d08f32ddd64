"""Completions from a policy inside training: K samples per prompt with token ids, masks and
per-token log-probs under the sampling distribution, from the policy, the reference, or their
geometric mixture (Nash-MD). ``HFSampler`` (default, CPU and GPU) decodes with the HF model's
KV cache; ``VLLMSampler`` (optional, GPU, ``pip install vllm``) does the same on vLLM with the
trained weights synced in. ``make_sampler`` picks one by name."""

from __future__ import annotations

from policylab.sampling.completions import Completions, SamplingError
from policylab.sampling.hf import HFSampler

BACKENDS = ("hf", "vllm")


def make_sampler(backend: str = "hf", tokenizer=None, **settings):
    """``HFSampler(tokenizer, **settings)`` for ``"hf"``; ``VLLMSampler(tokenizer, **settings)``
    (``model=`` the folder or hub name vLLM loads) for ``"vllm"``."""
    if backend == "hf":
        return HFSampler(tokenizer, **settings)
    if backend == "vllm":
        from policylab.sampling.vllm import VLLMSampler

        return VLLMSampler(tokenizer, **settings)
    raise SamplingError(f"sampler backend {backend!r}: choose one of {BACKENDS}")


def __getattr__(name: str):
    # VLLMSampler on demand, so importing policylab.sampling never imports vllm (vllm.py imports it lazily too)
    if name == "VLLMSampler":
        from policylab.sampling.vllm import VLLMSampler

        return VLLMSampler
    raise AttributeError(f"module 'policylab.sampling' has no attribute {name!r}")


__all__ = ["BACKENDS", "Completions", "HFSampler", "SamplingError", "VLLMSampler", "make_sampler"]
