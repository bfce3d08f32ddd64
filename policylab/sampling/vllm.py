"""vLLM backend of the sampler: the same interface and the same :class:`Completions` as
:class:`~policylab.sampling.hf.HFSampler`, generating with vLLM's paged-attention engine on a GPU.

UNTESTED until a GPU machine with vLLM runs it: it is written against vLLM's documented API
(``vllm.LLM(model=...)``, ``SamplingParams(n, temperature, top_p, top_k, max_tokens, stop, seed,
logprobs=0)``, ``LLM(logprobs_mode="processed_logprobs")`` of the V1 engine, and the model
runner's ``load_weights`` for the weight sync, the path TRL's colocate mode uses). On CPU, or
where vllm is not installed, constructing it raises :class:`SamplingError` with what to do.
This is the only module of policylab that imports vllm, and only inside :class:`VLLMSampler`.

Weight sync: :meth:`VLLMSampler.sync_weights` pushes the trained model's parameters into the
engine (LoRA adapters merged into their base weights for the copy, then unmerged: see
:func:`merged_weights`); :meth:`sample` calls it first when ``sync_on_sample`` (the default), so
every sampling round sees the current policy (after each update or iteration, whichever calls
``sample``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from policylab.sampling.completions import Completions, SamplingError
from policylab.sampling.hf import SamplingSettings, assemble, check_context, encode_prompts

NEEDS = "VLLMSampler needs vllm and a CUDA GPU: pip install vllm; use HFSampler on CPU"


@contextlib.contextmanager
def merged_weights(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """The model's weights under the base model's own parameter names (those a checkpoint of
    the base model has), LoRA merged in: for a PEFT model the adapters are merged into their
    base layers for the block (``merge_adapter``) and unmerged after, so the trained model is
    left as it was; the adapter tensors themselves are left out. A plain model gives its
    ``state_dict``. Tensors are views, valid inside the block."""
    is_peft = hasattr(model, "merge_adapter") and hasattr(model, "get_base_model")
    if is_peft:
        model.merge_adapter()
    try:
        state = (model.get_base_model() if is_peft else model).state_dict()
        weights = {}
        for name, tensor in state.items():
            if "lora_" in name or name.endswith("modules_to_save") or ".original_module." in name:
                continue
            weights[name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")] = tensor.detach()
        yield weights
    finally:
        if is_peft:
            model.unmerge_adapter()


class VLLMSampler(SamplingSettings):
    """:class:`~policylab.sampling.hf.HFSampler`'s interface on vLLM (see the module docstring;
    untested until a GPU machine runs it).

    ``model`` is the name or folder vLLM loads its copy from (the policy's starting checkpoint);
    ``llm_kwargs`` go to ``vllm.LLM`` (``gpu_memory_utilization``, ``dtype``, ``max_model_len``,
    ...). Differences from HFSampler: no geometric mixture (``mixture_coef`` must be 0: use
    HFSampler for Nash-MD), and vLLM's own seeded sampler (same seed, same completions on the
    same engine, but not the same draws as HFSampler's).
    """

    def __init__(
        self,
        tokenizer,
        model: str,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: Sequence[str] = (),
        batch_size: int = 64,
        max_prompt_length: int | None = None,
        sync_on_sample: bool = True,
        gpu_memory_utilization: float = 0.3,
        **llm_kwargs,
    ):
        try:
            import vllm
        except ImportError as err:
            raise SamplingError(NEEDS) from err
        if not torch.cuda.is_available():
            raise SamplingError(NEEDS)
        super().__init__(
            tokenizer, max_new_tokens, temperature, top_p, top_k, stop_strings, batch_size, max_prompt_length
        )
        self.sync_on_sample = sync_on_sample
        self._vllm = vllm
        try:
            # processed_logprobs: log-probs after temperature and top-k/top-p, the distribution sampled
            self.llm = vllm.LLM(
                model=model,
                gpu_memory_utilization=gpu_memory_utilization,
                logprobs_mode="processed_logprobs",
                **llm_kwargs,
            )
        except TypeError as err:
            raise SamplingError(
                f"this vllm ({getattr(vllm, '__version__', '?')}) does not take logprobs_mode: VLLMSampler needs the "
                "V1 engine's processed_logprobs (pip install -U vllm), the log-probs of the sampling distribution"
            ) from err

    def _runner_model(self):
        """The engine's torch model, where it runs in this process (V1 without multiprocessing, or V0)."""
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        worker = getattr(worker, "worker", worker)
        return worker.model_runner.model

    @torch.no_grad()
    def sync_weights(self, model: nn.Module) -> None:
        """Copies ``model``'s weights (LoRA merged) into the engine and drops its prefix cache."""
        with merged_weights(model) as weights:
            items = list(weights.items())
            try:
                self._runner_model().load_weights(items)
            except AttributeError:
                # engine in another process: run load_weights on each worker
                self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(items))
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def sample(
        self,
        model: nn.Module | None,
        prompts: list[str],
        num_samples: int = 1,
        seed: int | None = None,
        reference: nn.Module | None = None,
        mixture_coef: float = 0.0,
    ) -> Completions:
        """As :meth:`HFSampler.sample`; ``model`` (when given and ``sync_on_sample``) is synced first."""
        start = time.perf_counter()
        if mixture_coef != 0.0:
            raise SamplingError(
                f"VLLMSampler samples the synced policy only (mixture_coef={mixture_coef}): use HFSampler for the "
                "reference or the geometric mixture"
            )
        if model is not None and self.sync_on_sample:
            self.sync_weights(model)
        ids, truncated = encode_prompts(self.tokenizer, prompts, self.max_prompt_length)
        if model is not None:
            check_context(ids, self.max_new_tokens, model, "model")
        params = self._vllm.SamplingParams(
            n=num_samples,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k if self.top_k > 0 else -1,
            max_tokens=self.max_new_tokens,
            stop=list(self.stop_strings) or None,
            seed=seed,
            logprobs=0,
        )
        requests = [{"prompt_token_ids": row} for row in ids]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        rows = []
        for prompt_ids, output in zip(ids, outputs, strict=True):
            for sample in output.outputs:
                tokens = list(sample.token_ids)
                log_p = [step[token].logprob for step, token in zip(sample.logprobs, tokens, strict=True)]
                rows.append((prompt_ids, torch.tensor(tokens), torch.tensor(log_p), sample.finish_reason == "stop"))
        device = next(model.parameters()).device if model is not None else torch.device("cuda")
        completions = assemble(prompts, num_samples, rows, self.pad_token_id, self.tokenizer, self.stop_strings, device)
        completions.num_truncated_prompts = truncated
        completions.seconds = time.perf_counter() - start
        return completions
