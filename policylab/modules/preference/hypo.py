"""HyPO: Hybrid Preference Optimization (Song et al., "The Importance of Online Data: Understanding
Preference Fine-tuning via Coverage", NeurIPS 2024, arXiv 2406.01462).

Offline DPO needs the preference data to cover every response the policy may produce (global
coverage); an online method needs only the responses of policies near the reference (local
coverage), because its reverse-KL term is measured where the policy actually puts its mass. HyPO
keeps DPO's contrastive loss on the fixed preference pairs and adds that online KL term, measured
on fresh *unlabeled* samples of the policy (no judge, no reward model):

    L(theta) = L_DPO(theta; D_offline)  +  lambda * E_{x ~ D} KL(pi_theta(.|x) || pi_ref(.|x)).

One training step here (the paper's Algorithm 1, one offline batch and one online batch per step):

1. DPO's loss on the batch of offline pairs (one forward over chosen and rejected rows, as
   :class:`~policylab.modules.preference.DPO`; any reference-based ``loss_type`` of the registry);
2. the batch's prompts (decoded from its rows), ``num_generations`` = k samples each from the
   current policy (:class:`policylab.sampling.HFSampler`, temperature 1: the policy itself);
3. the policy's and the reference's log-probs of the samples, and the RLOO surrogate of the KL's
   gradient (:func:`policylab.losses.hypo.rloo_kl_surrogate`: REINFORCE on the sequence log-ratio
   with the leave-one-out baseline over the k samples of a prompt);
4. ``loss = L_DPO + kl_coef * surrogate``.

Logged: ``train/dpo_loss``, ``train/kl`` (the Monte-Carlo KL estimate on the step's samples, the
mean summed ``log pi - log pi_ref``), ``train/kl_surrogate``, DPO's reward metrics, and a few sample
texts to TensorBoard (``hypo/samples``) on logging steps. :class:`ReferenceKL` (a callback) measures
the same KL on fresh samples of fixed prompts for any module with a ``policy`` and a
``reference_log_probs`` (offline DPO included), so the two can be compared.

Sampling is seeded by ``sampling_seed``, the global step and the rank: a resumed run draws the same
samples at the same step as the uninterrupted one. Not from the paper: the samples' prompts are
the offline batch's own (the paper samples a separate online prompt batch from the same prompt
distribution); the paper's values of lambda, k and beta were not read (its hyperparameter table
was not reachable): the defaults below are this library's choice and the config states its own.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from policylab.callbacks.evaluation import log_evaluation
from policylab.datamodules.online import right_padded
from policylab.datamodules.text import read_rows
from policylab.losses.hypo import rloo_kl_surrogate
from policylab.modules.preference.dpo import DPO
from policylab.sampling import HFSampler


def batch_prompts(batch: dict[str, Tensor], tokenizer) -> list[str]:
    """The prompt text of every pair of a preference batch (its chosen rows): the tokens before the
    completion, decoded with special tokens kept and the BOS the tokenizer adds itself removed, so
    that encoding the text again gives the same ids (checked on the first row; a tokenizer that
    does not round-trip gets a warning)."""
    pairs = batch["input_ids"].shape[0] // 2
    prompt_mask = batch["attention_mask"][:pairs].bool() & ~batch["completion_mask"][:pairs].bool()
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("").input_ids[:1] == [tokenizer.bos_token_id]
    texts, first = [], None
    for row, mask in zip(batch["input_ids"][:pairs], prompt_mask):
        ids = row[mask].tolist()
        first = ids if first is None else first
        if adds_bos and ids[:1] == [tokenizer.bos_token_id]:
            ids = ids[1:]
        texts.append(tokenizer.decode(ids, skip_special_tokens=False))
    if texts and tokenizer(texts[0]).input_ids != first:
        rank_zero_warn(
            f"the prompt {texts[0]!r} does not encode back to its batch tokens {first}: the online samples are "
            "drawn for the re-encoded prompt"
        )
    return texts


class HyPO(DPO):
    """Offline DPO plus the online reverse-KL term of HyPO (see the module docstring).

    Args:
        model: the SFT model (name, path or model); the reference starts as a frozen copy of it.
        kl_coef: lambda, the weight of ``KL(pi_theta || pi_ref)`` (0: offline DPO with the KL logged).
        num_generations: k unlabeled samples per prompt for the RLOO estimate (>= 2).
        beta: DPO's beta (and the reward metrics').
        max_new_tokens, temperature, top_p, top_k, stop_strings, generation_batch_size: sampling of
            the online responses (temperature 1, no truncation: samples of ``pi_theta`` itself, which
            the estimator assumes; other values are allowed with a warning).
        sampling_seed: the seed of the samples (with the step and the rank).
        num_sample_texts: sample texts written to TensorBoard on logging steps.
        kwargs: the other settings of :class:`~policylab.modules.preference.DPO` (``loss_type``,
            ``loss_kwargs``, ``reference_model``, ``lora``, ``lr``, ...). ``precompute_reference`` is
            refused: the KL term needs the reference model during training.
    """

    def __init__(
        self,
        model: Any,
        kl_coef: float = 0.1,
        num_generations: int = 4,
        beta: float = 0.1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: list[str] | None = None,
        generation_batch_size: int = 64,
        sampling_seed: int = 0,
        num_sample_texts: int = 4,
        **kwargs: Any,
    ) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef (lambda) must be >= 0, got {kl_coef}")
        if num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (the leave-one-out baseline), got {num_generations}")
        if kwargs.get("precompute_reference"):
            raise ValueError(
                "HyPO measures KL(pi || pi_ref) on fresh samples every step: it needs the reference model during "
                "training; leave precompute_reference off"
            )
        super().__init__(model, beta=beta, **kwargs)
        if not self.needs_reference:
            raise ValueError(
                f"loss_type {self.hparams.get('loss_type', kwargs.get('loss_type'))!r} has no reference; HyPO's KL "
                "term needs one: use a reference-based loss (sigmoid, ipo, ...)"
            )
        if temperature != 1.0 or top_p < 1.0 or top_k > 0:
            rank_zero_warn(
                f"HyPO samples at temperature {temperature}, top_p {top_p}, top_k {top_k}: not from pi_theta itself, "
                "so the KL estimate and its gradient are biased (use 1.0, 1.0, 0)"
            )
        self.sampler: HFSampler | None = None  # built at fit start from the datamodule's tokenizer

    # ----------------------------------------------------------------- parts
    def tokenizer(self):
        data = self.trainer.datamodule
        if data is None or getattr(data, "tokenizer", None) is None:
            raise ValueError(
                "HyPO samples responses with the data's tokenizer: use a datamodule with a .tokenizer "
                "(policylab.datamodules.PreferenceDataModule)"
            )
        return data.tokenizer

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.sampler is None:
            h = self.hparams
            self.sampler = HFSampler(
                self.tokenizer(),
                max_new_tokens=h.max_new_tokens,
                temperature=h.temperature,
                top_p=h.top_p,
                top_k=h.top_k,
                stop_strings=tuple(h.stop_strings or ()),
                batch_size=h.generation_batch_size,
                max_prompt_length=getattr(self.trainer.datamodule.hparams, "max_prompt_length", None),
            )

    # ----------------------------------------------------------------- the online term
    def sample_seed(self) -> int:
        """The samples' seed at this step: ``sampling_seed``, the global step and the rank."""
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return int(self.hparams.sampling_seed) * 1_000_003 + self.global_step * world + rank

    def online_kl(self, prompts: list[str]) -> tuple[Tensor, Tensor, list[str]]:
        """``(surrogate, kl, texts)`` of ``k`` fresh samples per prompt (see :func:`rloo_kl_surrogate`)."""
        k = self.hparams.num_generations
        completions = self.sampler.sample(self.policy, prompts, num_samples=k, seed=self.sample_seed())
        pad = self.sampler.pad_token_id
        ids, attention, completion = right_padded(
            completions.input_ids, completions.attention_mask.long(), completions.completion_mask.long(), pad_id=pad
        )
        rows = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
        log_probs = self._log_probs(self.policy, rows)[0]
        reference = self.reference_log_probs(rows)
        surrogate, kl = rloo_kl_surrogate(log_probs.reshape(len(prompts), k), reference.reshape(len(prompts), k))
        return surrogate, kl, list(completions.texts)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        dpo_loss, metrics = self.shared_step(batch)
        prompts = batch_prompts(batch, self.sampler.tokenizer)
        surrogate, kl, texts = self.online_kl(prompts)
        loss = dpo_loss + self.hparams.kl_coef * surrogate
        metrics = {**metrics, "dpo_loss": dpo_loss.detach(), "kl": kl, "kl_surrogate": surrogate.detach()}
        self.log_step("train", loss, metrics, self.batch_size(batch))
        if self.is_logging_step():
            self._log_samples(prompts, texts)
        return loss

    def _log_samples(self, prompts: list[str], texts: list[str]) -> None:
        count, k = self.hparams.num_sample_texts, self.hparams.num_generations
        if not count or not self.trainer.is_global_zero:
            return
        lines = ["| prompt | sample |", "|---|---|"]
        lines += [f"| {prompts[i // k]!r} | {texts[i]!r} |" for i in range(min(count * k, len(texts)))]
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("hypo/samples", "\n".join(lines), self.global_step)


class ReferenceKL(Callback):
    """Every ``every_n_steps`` training steps, the reverse KL of the module's policy to its reference
    on fresh samples: ``num_samples`` responses (temperature 1) to each of the first ``limit``
    prompts of ``eval_file``, logged as ``eval/kl``, the mean summed ``log pi(y|x) - log pi_ref(y|x)``
    (an unbiased Monte-Carlo estimate of ``E_x KL(pi(.|x) || pi_ref(.|x))``). Works with any module
    that has ``policy`` and ``reference_log_probs(rows)`` (DPO, HyPO, OnlineDPO, ...), so offline DPO's
    drift can be compared with HyPO's. Seeded by ``seed`` alone: each evaluation draws with the same
    generator state (the same randomness, the weights differ)."""

    def __init__(
        self,
        eval_file: str,
        every_n_steps: int = 100,
        num_samples: int = 4,
        max_new_tokens: int = 64,
        limit: int | None = 128,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        rows = read_rows(eval_file)[:limit]
        if not rows or any("prompt" not in r for r in rows):
            raise ValueError(f"{eval_file}: ReferenceKL needs rows with a 'prompt' column")
        if every_n_steps < 0 or num_samples < 1:
            raise ValueError(f"every_n_steps must be >= 0 and num_samples >= 1, got {every_n_steps}, {num_samples}")
        self.prompts = [r["prompt"] for r in rows]
        self.every_n_steps, self.num_samples, self.seed = every_n_steps, num_samples, seed
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    @torch.no_grad()
    def estimate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        sampler = HFSampler(
            trainer.datamodule.tokenizer, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size
        )
        completions = sampler.sample(pl_module.policy, self.prompts, num_samples=self.num_samples, seed=self.seed)
        ids, attention, completion = right_padded(
            completions.input_ids,
            completions.attention_mask.long(),
            completions.completion_mask.long(),
            pad_id=sampler.pad_token_id,
        )
        diffs = []
        for start in range(0, ids.shape[0], self.batch_size):
            rows = {
                "input_ids": ids[start : start + self.batch_size],
                "attention_mask": attention[start : start + self.batch_size],
                "completion_mask": completion[start : start + self.batch_size],
            }
            policy = pl_module._log_probs(pl_module.policy, rows)[0]
            diffs.append(policy - pl_module.reference_log_probs(rows))
        return torch.cat(diffs).mean().item()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.every_n_steps or trainer.global_step % self.every_n_steps != 0:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            kl = self.estimate(trainer, pl_module)
        finally:
            pl_module.train(was_training)
        log_evaluation(trainer, pl_module, {"eval/kl": kl})
