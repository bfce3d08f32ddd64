"""Online DPO (OAIF) and iterative best-of-n DPO: the DPO family on the policy's own fresh samples.

Guo et al., "Direct Language Model Alignment from Online AI Feedback" (2024, arXiv 2402.04792):
every step, sample two responses per prompt from the current policy, let a judge pick the better
one, and take a DPO step on that pair. Iterative best-of-n DPO (the iterative DPO of Xiong et al.
2024 / Dong et al. 2024, RLHFlow): sample K responses, pair the best against the worst, train;
the reference stays the SFT model. One module: ``pair_rule`` picks the pairing, ``loss_type``
the loss of :data:`policylab.losses.pairwise.PAIRWISE_LOSSES`, ``reference_update`` the
reference rule.

The loop, inside ``fit``. Training runs in iterations of ``generate_every_n_steps`` steps. At the
first step of iteration ``i`` (in ``training_step``, with the weights of that step, never in a
prefetching dataloader) the module:

1. updates the reference (``previous_iterate``: a copy of the policy now);
2. takes iteration ``i``'s prompts from :class:`~policylab.datamodules.online.OnlinePromptDataModule`
   (this rank's share under DDP), samples ``num_generations`` completions per prompt
   (:class:`policylab.sampling.HFSampler`, seeded by the datamodule's seed, ``i`` and the rank);
3. scores them with the judge (a :class:`policylab.judges.ScalarJudge`: a verifier or a reward
   model), subtracting ``missing_eos_penalty`` from completions that hit ``max_new_tokens``;
4. builds pairs (:func:`~policylab.datamodules.online.build_pairs`: equal scores dropped and
   counted), gathers every rank's pairs and stores them in the datamodule, whose state dict
   (Lightning puts it in every checkpoint) holds them as tensors with the iteration number;
5. logs the iteration (every iteration, or one per ``log_every_n_steps`` when iterations are
   shorter): ``online/score`` (mean judge score of the samples, after the EOS penalty),
   ``online/usable_fraction`` (prompts with at least one pair), ``online/dropped_ties``,
   ``online/pairs``, ``online/kl`` (mean over samples of the summed log pi - log pi_ref),
   ``online/generation_tokens_per_s``, ``online/missing_eos`` (samples that hit
   ``max_new_tokens``: judged as they are, penalized with ``missing_eos_penalty`` when set),
   ``online/empty_completions`` (samples whose text is empty, EOS first: judged as they are),
   and a few sample texts to TensorBoard (``online/samples``).

Every step of the iteration (its first included) trains on ``batch_size`` of the stored pairs
(:meth:`~policylab.datamodules.online.OnlinePromptDataModule.step_batch`), one forward over
chosen and rejected rows as offline DPO does. A resumed run restores the weights, the reference,
the optimizer and the stored pairs: a checkpoint written inside iteration ``i`` continues it on
the same pairs, and the next iteration samples the same prompts with the same seeds as the
uninterrupted run would. Reference rules: ``fixed`` (the starting model), ``previous_iterate``,
``ema`` (TR-DPO, Gorbatovski et al. 2024: ``ref <- alpha * policy + (1 - alpha) * ref`` every
``ref_update_every`` optimizer steps).

Why generation sits in ``training_step`` and not in the dataloader or a callback: Lightning
fetches the next batch before the current step runs, so samples drawn by a dataloader would come
from the weights of a step earlier, and a resumed run could not tell how far the prefetch had
gone; the module holds the sampler, judge and reference anyway, and the online methods built on
it (SPPO, Nash-MD, ...) override :meth:`OnlineDPO.run_iteration` or the step, not the storage.
The datamodule's loader yields empty ticks; the data lives in the datamodule's state.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from policylab.callbacks.evaluation import log_evaluation
from policylab.datamodules.online import PAIR_RULES, build_pairs, right_padded
from policylab.judges import JudgeError, ScalarJudge, VerifierJudge, as_pairwise_judge
from policylab.losses.pairwise import PairStats
from policylab.modules.preference.lm import LanguageModelModule
from policylab.modules.preference.objective import PairwiseObjective
from policylab.nn.sequence import model_completion_log_probs
from policylab.sampling import BACKENDS

REFERENCE_UPDATES = ("fixed", "previous_iterate", "ema")
_ROW_KEYS = ("input_ids", "attention_mask", "completion_mask")


class OnlineDPO(LanguageModelModule):
    """Online / iterative DPO of a causal LM on its own judged samples (see the module docstring).

    Args:
        model: name or path for ``AutoModelForCausalLM.from_pretrained`` (the SFT model), or a model.
        judge: a :class:`policylab.judges.ScalarJudge` (anything with ``score(prompts, completions)``
            giving ``[N]`` scores), or a dotted path of a check ``(prompt, completion) -> bool``
            wrapped as a :class:`policylab.judges.VerifierJudge`.
        loss_type, beta, loss_kwargs: the pairwise loss of the registry (TRL's online DPO: ``sigmoid``
            or ``ipo``, beta 0.1).
        num_generations: K completions per prompt (2 for OAIF).
        pair_rule: ``random_pair`` (OAIF), ``best_vs_worst`` (iterative best-of-n), ``all_pairs``.
        keep_ties: train on equal-score pairs too, the first completion chosen (TRL's rule);
            default: dropped and counted.
        missing_eos_penalty: subtracted from the score of a completion that ended without EOS
            (TRL's option; None: no penalty).
        generate_every_n_steps: steps per iteration (1: fresh samples every step, as OAIF).
        max_new_tokens, temperature, top_p, top_k, stop_strings, generation_batch_size: sampling
            (TRL's online DPO defaults: 64 tokens, temperature 0.9).
        sampler, sampler_kwargs: the backend, ``hf`` (default) or ``vllm`` (GPU), and its extra
            arguments (see :meth:`build_sampler`).
        reference_update: ``fixed``, ``previous_iterate`` or ``ema``; ``ref_alpha`` (0.6) and
            ``ref_update_every`` (512 steps) are TR-DPO's / TRL's.
        num_sample_texts: sample texts written to TensorBoard per iteration.
        lora, disable_dropout, lr (5e-7), weight_decay: as :class:`~policylab.modules.preference.DPO`.
    """

    frozen_parts = ("reference",)

    def __init__(
        self,
        model: Any,
        judge: str | ScalarJudge = "policylab.tasks.arithmetic.is_correct",
        loss_type: str = "sigmoid",
        beta: float = 0.1,
        loss_kwargs: dict[str, float] | None = None,
        num_generations: int = 2,
        pair_rule: str = "random_pair",
        keep_ties: bool = False,
        missing_eos_penalty: float | None = None,
        generate_every_n_steps: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 0.9,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: list[str] | None = None,
        generation_batch_size: int = 64,
        sampler: str = "hf",
        sampler_kwargs: dict[str, Any] | None = None,
        reference_update: str = "fixed",
        ref_alpha: float = 0.6,
        ref_update_every: int = 512,
        num_sample_texts: int = 4,
        lora: dict[str, Any] | None = None,
        disable_dropout: bool = True,
        lr: float = 5e-7,
        weight_decay: float = 0.0,
    ) -> None:
        # Every setting, read by the loop from here: a subclass (SPPO, RSO) fixes some of them, and its
        # hparams (what LightningCLI saves: the subclass's own arguments) do not hold those.
        settings = {k: v for k, v in locals().items() if k not in ("self", "__class__", "model", "judge")}
        settings["model"] = model if isinstance(model, str) else None
        objective = PairwiseObjective(loss_type, loss_kwargs)  # unknown names and keys stop before loading
        if pair_rule not in PAIR_RULES:
            raise ValueError(f"pair_rule must be one of {', '.join(PAIR_RULES)}, got {pair_rule!r}")
        if reference_update not in REFERENCE_UPDATES:
            raise ValueError(
                f"reference_update must be one of {', '.join(REFERENCE_UPDATES)}, got {reference_update!r}"
            )
        if sampler not in BACKENDS:
            raise ValueError(f"sampler must be one of {', '.join(BACKENDS)}, got {sampler!r}")
        if num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (a pair needs two completions), got {num_generations}")
        if generate_every_n_steps < 1 or ref_update_every < 1 or not 0.0 < ref_alpha <= 1.0:
            raise ValueError(
                "generate_every_n_steps and ref_update_every must be >= 1 and ref_alpha in (0, 1], got "
                f"{generate_every_n_steps}, {ref_update_every}, {ref_alpha}"
            )
        if lora is not None and reference_update != "fixed":
            raise ValueError(
                f"reference_update {reference_update!r} needs a full reference copy; with lora the reference is the "
                "base model (adapters off): use reference_update: fixed, or train without lora"
            )
        super().__init__(model, lora, disable_dropout)
        self.record_hyperparameters()
        self.settings = AttributeDict(settings)
        self.objective = objective
        self.needs_reference = objective.needs_reference
        self.reference = None
        if self.needs_reference and lora is None:
            self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.judge = self.build_judge(judge)
        self.sampler_backend = sampler
        self.sampler = None  # built at fit start from the datamodule's tokenizer

    # ----------------------------------------------------------------- parts
    #: what the method's judge gives: ``scalar`` (a score per completion) or ``pairwise``
    #: (``P(a > b)``; a scalar judge or a check is then wrapped as Bradley-Terry)
    judge_kind = "scalar"

    def build_judge(self, judge: Any):
        """A judge object as it is; a dotted path of a check function as a VerifierJudge; for a
        ``pairwise`` method, :func:`policylab.judges.as_pairwise_judge` of it."""
        if self.judge_kind == "pairwise":
            return as_pairwise_judge(judge, type(self).__name__)
        if isinstance(judge, str):
            return VerifierJudge(judge)
        if not callable(getattr(judge, "score", None)):
            raise ValueError(f"judge must have score(prompts, completions) or be a dotted path, got {judge!r}")
        return judge

    def build_sampler(self, tokenizer, max_prompt_length: int | None):
        """The sampler of the module's generation settings: :class:`policylab.sampling.HFSampler`
        (``sampler: hf``) or :class:`policylab.sampling.VLLMSampler` (``sampler: vllm``, GPU; it
        loads ``sampler_kwargs["model"]``, by default the ``model`` path, and the policy's weights
        are synced into it at every sampling); ``sampler_kwargs`` go to its constructor."""
        from policylab.sampling import make_sampler

        h = self.settings
        settings = dict(
            max_new_tokens=h.max_new_tokens,
            temperature=h.temperature,
            top_p=h.top_p,
            top_k=h.top_k,
            stop_strings=tuple(h.stop_strings or ()),
            batch_size=h.generation_batch_size,
            max_prompt_length=max_prompt_length,
        )
        settings.update(h.sampler_kwargs or {})
        if self.sampler_backend == "vllm" and "model" not in settings:
            if not isinstance(h.get("model"), str):
                raise ValueError("sampler: vllm loads its copy of the policy from a path: set sampler_kwargs.model")
            settings["model"] = h.model
        return make_sampler(self.sampler_backend, tokenizer, **settings)

    def online_data(self):
        data = self.trainer.datamodule
        if data is None or not hasattr(data, "step_batch"):
            raise ValueError(
                f"{type(self).__name__} trains on its own samples: its datamodule must be "
                "policylab.datamodules.OnlinePromptDataModule (prompts and the running iteration's pairs)"
            )
        return data

    def on_fit_start(self) -> None:
        data = self.online_data()
        data.setup("fit")
        if self.sampler is None:
            self.sampler = self.build_sampler(data.tokenizer, data.hparams.max_prompt_length)

    # ----------------------------------------------------------------- reference
    @torch.no_grad()
    def reference_log_probs(self, batch: dict) -> Tensor:
        """Summed completion log-probs under the reference (the policy with adapters off under LoRA)."""
        if self.reference is not None:
            return self._log_probs(self.reference, batch)[0]
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self._log_probs(self.policy, batch)[0]
        finally:
            self.policy.train(was_training)

    @torch.no_grad()
    def update_reference(self, rule: str | None = None) -> None:
        """``previous_iterate``: the reference becomes a copy of the policy; ``ema``:
        ``ref <- ref_alpha * policy + (1 - ref_alpha) * ref`` for every weight."""
        rule = rule or self.settings.reference_update
        if self.reference is None or rule == "fixed":
            return
        alpha = 1.0 if rule == "previous_iterate" else self.settings.ref_alpha
        policy = dict(self.policy.named_parameters())
        policy.update(dict(self.policy.named_buffers()))
        for name, ref in [*self.reference.named_parameters(), *self.reference.named_buffers()]:
            if ref.is_floating_point():
                ref.lerp_(policy[name].to(ref.dtype), alpha)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.settings.reference_update == "ema" and self.global_step % self.settings.ref_update_every == 0:
            self.update_reference("ema")

    # ----------------------------------------------------------------- one iteration
    @staticmethod
    def _log_probs(model, batch: dict) -> tuple[Tensor, Tensor]:
        return model_completion_log_probs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])

    def _chunks(self, rows: dict[str, Tensor]):
        size = self.settings.generation_batch_size
        for start in range(0, rows["input_ids"].shape[0], size):
            yield {k: v[start : start + size] for k, v in rows.items()}

    @torch.no_grad()
    def _kl_estimate(self, rows: dict[str, Tensor]) -> Tensor:
        """Mean over the samples of the summed ``log pi(y|x) - log pi_ref(y|x)`` (a Monte-Carlo
        estimate of KL(pi || pi_ref) when sampling at temperature 1)."""
        if not self.needs_reference:
            return torch.tensor(float("nan"))
        diffs = [self._log_probs(self.policy, c)[0] - self.reference_log_probs(c) for c in self._chunks(rows)]
        return torch.cat(diffs).mean()

    def _judge(self, prompts: list[str], texts: list[str]) -> Tensor:
        scores = self.judge.score(prompts, texts)
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1) if not isinstance(scores, Tensor) else scores
        name = type(self.judge).__name__
        if scores.shape != (len(texts),):
            raise JudgeError(f"judge {name} gave {tuple(scores.shape)} scores for {len(texts)} completions")
        bad = (~torch.isfinite(scores)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise JudgeError(
                f"judge {name} scored completion {i} (prompt {prompts[i]!r}, completion {texts[i]!r}) "
                f"as {scores[i].item()}: scores must be finite"
            )
        return scores.float().cpu()

    def score_completions(self, completions) -> Tensor:
        """The judge's score of every row of ``completions`` (``[N*K]``, CPU), minus
        ``missing_eos_penalty`` where a row ended without EOS (TRL's rule), when it is set."""
        prompts = [completions.prompts[i] for i in completions.prompt_index.tolist()]
        scores = self._judge(prompts, list(completions.texts))
        if self.settings.missing_eos_penalty is not None:
            scores = scores - self.settings.missing_eos_penalty * (~completions.finished.bool().cpu()).float()
        return scores

    # Hooks of the methods built on this loop (SPPO, RSO): what is sampled, how pairs are formed,
    # which extra per-pair fields the loss reads.
    def sample_completions(self, prompts: list[str], seed: int):
        """The iteration's ``num_generations`` completions per prompt, from the current policy."""
        return self.sampler.sample(self.policy, prompts, num_samples=self.settings.num_generations, seed=seed)

    def make_pairs(self, scores: Tensor, generator: torch.Generator):
        """The training pairs of the judged ``[N, K]`` scores (:func:`build_pairs` with ``pair_rule``)."""
        return build_pairs(scores, self.settings.pair_rule, self.settings.keep_ties, generator)

    def extra_pair_fields(self, scores: Tensor, pairs) -> dict[str, Tensor]:
        """Extra per-pair fields (``[M]`` tensors) stored with the pairs and given to the loss; none here."""
        return {}

    def _gather(self, pairs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every rank's pairs, rank 0's first (rows padded to one width)."""
        world = self.trainer.world_size
        if world == 1:
            return pairs
        strategy = self.trainer.strategy
        device = self.device
        sizes = torch.tensor([pairs["chosen_score"].shape[0], pairs["chosen_input_ids"].shape[1]], device=device)
        all_sizes = strategy.all_gather(sizes).reshape(world, 2)
        rows, width = int(all_sizes[:, 0].max()), int(all_sizes[:, 1].max())
        out = {}
        for key, value in pairs.items():
            padded = torch.zeros((rows, *((width,) if value.ndim == 2 else ())), dtype=value.dtype, device=device)
            if value.ndim == 2:
                padded[: value.shape[0], : value.shape[1]] = value.to(device)
            else:
                padded[: value.shape[0]] = value.to(device)
            gathered = strategy.all_gather(padded).reshape(world, *padded.shape)
            out[key] = torch.cat([gathered[r, : int(all_sizes[r, 0])] for r in range(world)]).cpu()
        return out

    def run_iteration(self, data, iteration: int) -> None:
        """Sample, judge and pair iteration ``iteration``'s prompts; store the pairs in ``data``; log."""
        h = self.settings
        rank, world = self.trainer.global_rank, self.trainer.world_size
        self.update_reference()
        indices, prompts = data.iteration_prompts(iteration, rank, world)
        was_training = self.policy.training
        self.policy.eval()
        started = time.perf_counter()
        try:
            completions = self.sample_completions(prompts, data.generation_seed(iteration, rank))
        finally:
            self.policy.train(was_training)
        seconds = time.perf_counter() - started
        k = h.num_generations
        texts = list(completions.texts)
        prompt_of_row = [prompts[i] for i in completions.prompt_index.tolist()]
        scores = self.score_completions(completions)
        on_device = right_padded(
            completions.input_ids,
            completions.attention_mask.long(),
            completions.completion_mask.long(),
            pad_id=data.tokenizer.pad_token_id,
        )
        ids, attention, completion = (t.cpu() for t in on_device)  # the store's copies
        if (completion.sum(1) == 0).any():
            row = int((completion.sum(1) == 0).nonzero()[0])
            raise ValueError(
                f"the sampler returned completion {row} (prompt {prompt_of_row[row]!r}) without a single token; "
                "a completion holds at least its EOS: check the sampler's completion_mask"
            )
        generator = torch.Generator().manual_seed(data.generation_seed(iteration, rank))
        pairs = self.make_pairs(scores.reshape(len(prompts), k), generator)
        c, r = pairs.chosen, pairs.rejected
        local = {
            "chosen_input_ids": ids[c],
            "chosen_attention_mask": attention[c],
            "chosen_completion_mask": completion[c],
            "rejected_input_ids": ids[r],
            "rejected_attention_mask": attention[r],
            "rejected_completion_mask": completion[r],
            "chosen_score": scores[c],
            "rejected_score": scores[r],
            "prompt_index": torch.tensor(indices, dtype=torch.long)[pairs.prompt],
            **self.extra_pair_fields(scores, pairs),
        }
        data.store_iteration(iteration, self._gather(local))
        # The KL estimate costs a policy and a reference forward over every sample: only where it is logged.
        logged = self._logs_iteration(iteration)
        if logged:
            kl = self._kl_estimate({k: t.to(self.device) for k, t in zip(_ROW_KEYS, on_device, strict=True)})
        else:
            kl = torch.tensor(float("nan"))
        totals = torch.tensor(
            [
                float(scores.sum()),
                float(len(scores)),
                float(pairs.usable_prompts),
                float(len(prompts)),
                float(pairs.dropped_ties),
                float(len(c)),
                float(completion.sum()),
                seconds,
                float(kl) * len(scores) if torch.isfinite(kl) else 0.0,
                float(sum(text == "" for text in texts)),
                float((~completions.finished.bool()).sum()),
            ],
            dtype=torch.float64,
            device=self.device,
        )
        if world > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
            totals[7] = totals[7] / world
        t = totals.tolist()
        metrics = {
            "online/iteration": float(iteration),
            "online/score": t[0] / t[1],
            "online/usable_fraction": t[2] / t[3],
            "online/dropped_ties": t[4],
            "online/pairs": t[5],
            "online/generation_tokens_per_s": t[6] / max(t[7], 1e-9),
            "online/empty_completions": t[9],
            "online/missing_eos": t[10],
        }
        if self.needs_reference and logged:
            metrics["online/kl"] = t[8] / t[1]
        self.last_iteration_metrics = metrics
        if logged:
            log_evaluation(self.trainer, self, metrics)
            self._log_samples(prompt_of_row, texts, scores, k)

    def _logs_iteration(self, iteration: int) -> bool:
        """Whether iteration ``iteration`` is logged: every iteration when iterations are at least
        ``log_every_n_steps`` long, else the first iteration after each ``log_every_n_steps``."""
        every = self.settings.generate_every_n_steps
        interval = max(1, (self.trainer.log_every_n_steps or 1) // every)
        return iteration % interval == 0

    def _log_samples(self, prompts: list[str], texts: list[str], scores: Tensor, k: int) -> None:
        count = self.settings.num_sample_texts
        if not count or not self.trainer.is_global_zero:
            return
        lines = ["| prompt | completion | score |", "|---|---|---|"]
        for i in range(0, min(count * k, len(texts))):
            lines.append(f"| {prompts[i]!r} | {texts[i]!r} | {scores[i].item():.3g} |")
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("online/samples", "\n".join(lines), self.global_step)

    # ----------------------------------------------------------------- steps
    def batch_size(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // 2

    def sequence_stats(self, batch: dict) -> PairStats:
        """Summed completion log-probs of policy and reference over chosen then rejected rows. The
        reference's no-grad forward runs first: its intermediate tensors are freed before the policy's
        forward holds its activations for the backward, so the two never add up in the peak memory."""
        ref = self.reference_log_probs(batch) if self.needs_reference else None
        logp, tokens = self._log_probs(self.policy, batch)
        pairs = logp.shape[0] // 2
        fields = {k: v for k, v in batch.items() if k not in _ROW_KEYS}
        if ref is not None:
            ref_chosen, ref_rejected = ref[:pairs], ref[pairs:]
        else:
            ref_chosen, ref_rejected = torch.zeros_like(logp[:pairs]), torch.zeros_like(logp[pairs:])
        return PairStats(logp[:pairs], logp[pairs:], ref_chosen, ref_rejected, tokens[:pairs], tokens[pairs:], fields)

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        stats = self.sequence_stats(batch)
        loss = self.objective(stats, self.settings.beta).mean()
        chosen, rejected = (self.settings.beta * ratio.detach() for ratio in stats.ratios())
        return loss, {
            "reward_accuracy": (chosen > rejected).float().mean(),
            "reward_margin": (chosen - rejected).mean(),
            "chosen_reward": chosen.mean(),
            "rejected_reward": rejected.mean(),
        }

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        data = self.online_data()
        every = self.settings.generate_every_n_steps
        iteration, step = divmod(self.global_step, every)
        if data.iteration != iteration:
            self.run_iteration(data, iteration)
        pairs = data.step_batch(step, self.trainer.global_rank, self.trainer.world_size, self.device)
        if pairs is None:
            # No pair in the whole iteration (every score tied): a zero loss keeps DDP's ranks in step.
            loss = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            self.log_step("train", loss, {}, 1)
            return loss
        loss, metrics = self.shared_step(pairs)
        self.log_step("train", loss, metrics, self.batch_size(pairs))
        return loss

    # No validation pairs: an online run is evaluated by callbacks (GreedyAccuracy).
    validation_step = L.LightningModule.validation_step
