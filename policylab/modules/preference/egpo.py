"""EGPO: Extragradient Preference Optimization (Zhou, Fazel, Du, COLM 2025, arXiv 2503.08942; the
authors' code zhourunlong/EGPO, ``lms/trainers/extragradient_trainer.py`` and ``lms/train_nlhf.py``).

EGPO looks for the Nash equilibrium of the KL-regularized preference game (Nash learning from
human feedback) with the extragradient method, each of whose steps is a gradient step on the
online IPO loss of :func:`policylab.losses.egpo.online_ipo_loss`:

    L(theta; pi_s) = E [ ( h_theta(y, y') - (P(y > y'') - P(y' > y'')) / beta )^2 ],  y'' ~ pi_s,

    half step:  theta_{t+1/2} = theta_t - eta * grad_theta L(theta_t; pi_{theta_t})
    full step:  theta_{t+1}   = theta_t - eta * grad_theta L(theta_t; pi_{theta_{t+1/2}})

The full step starts again from ``theta_t`` and takes the gradient of the loss whose samples and
opponent ``y''`` come from the half-step policy ``pi_{theta_{t+1/2}}``: the extragradient of the
policy-space update ``pi_{t+1} ∝ pi_t^{1 - eta beta} pi_ref^{eta beta} exp(eta P(y > pi_{t+1/2}))``
that the paper turns into these gradients. This is what the authors' code does: on even optimizer
steps it saves the trainable weights and the optimizer state and steps; on odd steps it samples with
the half-step weights, restores the saved weights and optimizer state, and steps with the gradient
taken at the restored weights (their simulations, ``simulations/loss_funcs.py``, do the same).
``gradient_at: midpoint`` gives Korpelevich's textbook extragradient instead (the gradient is taken
at ``theta_{t+1/2}`` and applied to ``theta_t``); ``estimate_extra_grad: false`` gives plain online
IPO (every step a full step from the current weights).

On the loop of :class:`~policylab.modules.preference.OnlineDPO`: an iteration
(``generate_every_n_steps`` steps, 1 in the authors' code) samples, judges and trains on fresh
data; even iterations are half steps, odd ones full steps. Per prompt, ``y, y'`` come from the
policy (``mixture_coef`` > 0: the geometric mixture with the reference, the authors'
``y_yp_mixture_coef``) at ``temperature`` 2 and ``top_k`` 10 (the authors' EGPO settings), and
``y''`` from the policy at temperature 1; a pairwise judge gives ``P(y > y'')`` and ``P(y' > y'')``
(2 judge calls per prompt), stored with the pair (``chosen_score``, ``rejected_score``; the higher
one is called chosen). When ``y, y'`` are drawn as ``y''`` would be (``mixture_coef`` 0, temperature
1, no top-k / top-p), no ``y''`` is drawn and the target is ``(P(y > y') - 1/2) / beta`` (1 call
per prompt), as the authors' ``can_reduce_variance``. Every pair is kept, ties included (the
regression pulls a tied pair's log-ratio gap to 0).

Resuming: the saved ``theta_t`` and optimizer state live from the start of a half-step iteration
to the restore at the start of the next (full-step) iteration; a checkpoint written in between
holds them (``checkpoint["egpo_anchor"]``), so a run resumed there samples with the checkpoint's
half-step weights and then restores ``theta_t``, as the uninterrupted run does. Evaluations at
multiples of ``2 * generate_every_n_steps`` steps see full-step weights ``theta_t``; others may see a
half step. Restoring the optimizer state also restores its learning rates (a learning-rate
scheduler sets them again at its next step).

Differences from the authors' setup, documented: the prompts of the half and the full step are
different prompts (theirs too: each optimizer step reads the next batch); their run also uses a
linear warmup of 1000 steps and gradient clipping at 1 (Trainer / config settings here), batch 64,
and counts one "epoch" of EGPO as two passes (a half and a full step each).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from policylab.losses.egpo import online_ipo_loss, variance_reduced_preferences
from policylab.modules.preference.online_dpo import OnlineDPO

#: where the full step's gradient is taken
GRADIENT_POINTS = ("anchor", "midpoint")


class EGPO(OnlineDPO):
    """Extragradient preference optimization on the policy's own samples (see the module docstring).

    Args:
        model: the SFT model (name, path or model); policy and fixed reference start there.
        judge: a :class:`~policylab.judges.PairwiseJudge` (e.g. a GPM folder through
            :class:`~policylab.judges.PreferenceModelJudge`), or a scalar judge / a check's dotted
            path, used as Bradley-Terry ``P(a > b) = sigma(r_a - r_b)``.
        beta: the KL coefficient of the game (the authors' 0.1).
        estimate_extra_grad: True: extragradient (half and full steps); False: online IPO.
        gradient_at: ``anchor`` (the authors' and the paper's: the full step's gradient at
            ``theta_t``, on the half-step policy's samples) or ``midpoint`` (textbook extragradient:
            the gradient at ``theta_{t+1/2}``; needs ``generate_every_n_steps: 1``).
        mixture_coef: ``y, y'`` from ``softmax((1 - c) logits_policy + c logits_ref)`` (the
            authors' ``y_yp_mixture_coef``, 0 for EGPO); ``y''`` always from the policy.
        temperature, top_k: sampling of ``y, y'`` (the authors' 2.0 and 10); ``y''`` is sampled at
            temperature 1 without truncation.
        normalize_logprobs: per-token averaged log-probs in ``h`` (the authors' default).
        lr, weight_decay: AdamW's (the authors' 5e-7 and 0.01).
        kwargs: the other sampling, iteration and optimizer settings of
            :class:`~policylab.modules.preference.OnlineDPO` (``generate_every_n_steps``,
            ``max_new_tokens``, ``top_p``, ...).
    """

    judge_kind = "pairwise"  # a scalar judge or a check is used as Bradley-Terry

    def __init__(
        self,
        model: Any,
        judge: Any = "policylab.tasks.arithmetic.is_correct",
        beta: float = 0.1,
        estimate_extra_grad: bool = True,
        gradient_at: str = "anchor",
        mixture_coef: float = 0.0,
        temperature: float = 2.0,
        top_k: int = 10,
        normalize_logprobs: bool = True,
        lr: float = 5e-7,
        weight_decay: float = 0.01,
        **kwargs: Any,
    ) -> None:
        if not beta > 0:
            raise ValueError(f"beta (the KL coefficient of the game) must be > 0, got {beta}")
        if gradient_at not in GRADIENT_POINTS:
            raise ValueError(f"gradient_at must be one of {', '.join(GRADIENT_POINTS)}, got {gradient_at!r}")
        if gradient_at == "midpoint" and estimate_extra_grad and kwargs.get("generate_every_n_steps", 1) != 1:
            raise ValueError(
                "gradient_at: midpoint takes one gradient at theta_{t+1/2} per full step: it needs "
                f"generate_every_n_steps 1, got {kwargs['generate_every_n_steps']}"
            )
        if not 0.0 <= mixture_coef <= 1.0:
            raise ValueError(f"mixture_coef must be in [0, 1] (0: the policy, 1: the reference), got {mixture_coef}")
        if mixture_coef > 0 and kwargs.get("lora") is not None:
            raise ValueError("mixture_coef > 0 samples from a reference copy; with lora there is none: set it to 0")
        if kwargs.get("missing_eos_penalty") is not None:
            raise ValueError("EGPO's targets are preference probabilities: missing_eos_penalty does not apply")
        super().__init__(
            model,
            judge=judge,
            loss_type="ipo",  # the IPO family: a fixed reference is needed; the loss itself is shared_step's
            beta=beta,
            num_generations=2,
            pair_rule="random_pair",  # with 2 samples: (y, y'), the higher preference first
            keep_ties=True,
            temperature=temperature,
            top_k=top_k,
            reference_update="fixed",
            lr=lr,
            weight_decay=weight_decay,
            **kwargs,
        )
        #: theta_t (trainable weights) and the optimizer state, saved for the full step; None otherwise
        self.anchor: dict[str, Any] | None = None
        self._restore_before_step = False
        self._opponents = None
        self.opponent_sampler = None

    @property
    def samples_opponent(self) -> bool:
        """Whether ``y''`` is drawn: False when ``y, y'`` already come from the opponent's
        distribution (policy, temperature 1, no truncation), the authors' ``can_reduce_variance``."""
        h, s = self.hparams, self.settings
        return not (h.mixture_coef == 0 and h.temperature == 1.0 and h.top_k == 0 and s.top_p == 1.0)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.opponent_sampler is None:
            # y'' ~ pi_theta itself: the same sampler (and engine) at temperature 1, untruncated
            self.opponent_sampler = copy.copy(self.sampler)
            self.opponent_sampler.temperature, self.opponent_sampler.top_k, self.opponent_sampler.top_p = 1.0, 0, 1.0

    # ----------------------------------------------------------------- samples and preferences
    def sample_completions(self, prompts: list[str], seed: int):
        """``y, y'`` per prompt (policy or geometric mixture); ``y''`` per prompt (policy, temperature
        1) kept aside for :meth:`score_completions` when :attr:`samples_opponent`."""
        coef = self.hparams.mixture_coef
        reference = self.reference if coef > 0 else None
        pairs = self.sampler.sample(
            self.policy, prompts, num_samples=2, seed=seed, reference=reference, mixture_coef=coef
        )
        self._opponents = None
        if self.samples_opponent:
            opponent_seed = (seed + 500_009) % 2**31
            self._opponents = self.opponent_sampler.sample(self.policy, prompts, num_samples=1, seed=opponent_seed)
        return pairs

    def score_completions(self, completions) -> Tensor:
        """``[P(y > y''), P(y' > y'')]`` per prompt, ``[N * 2]`` (or ``[P(y > y'), 1/2]`` without ``y''``)."""
        prompts, texts = list(completions.prompts), list(completions.texts)
        y, y_prime = texts[0::2], texts[1::2]
        if self._opponents is None:
            p_y, p_y_prime = variance_reduced_preferences(self.judge.prefer(prompts, y, y_prime))
        else:
            opponents = list(self._opponents.texts)
            both = self.judge.prefer(prompts + prompts, y + y_prime, opponents + opponents)
            p_y, p_y_prime = both[: len(prompts)], both[len(prompts) :]
        return torch.stack([p_y, p_y_prime], 1).float().cpu().reshape(-1)

    # ----------------------------------------------------------------- extragradient
    def _optimizer(self):
        optimizer = self.optimizers()
        return getattr(optimizer, "optimizer", optimizer)

    def _trainable(self) -> dict[str, Tensor]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def save_anchor(self) -> None:
        """Keep ``theta_t`` (the trainable weights) and a copy of the optimizer state."""
        self.anchor = {
            "parameters": {name: p.detach().clone() for name, p in self._trainable().items()},
            "optimizer": copy.deepcopy(self._optimizer().state_dict()),
        }

    @torch.no_grad()
    def restore_anchor(self) -> None:
        """Put ``theta_t`` and its optimizer state back (gradients are left as they are)."""
        if self.anchor is None:
            raise RuntimeError(
                "EGPO's full step needs theta_t saved by the half step, and there is none: the run resumed from a "
                "checkpoint without 'egpo_anchor' (written by another module or estimate_extra_grad: false)"
            )
        saved = self.anchor["parameters"]
        for name, p in self._trainable().items():
            p.copy_(saved[name].to(p.device, p.dtype))
        self._optimizer().load_state_dict(self.anchor["optimizer"])
        self.anchor = None

    def run_iteration(self, data, iteration: int) -> None:
        """Even iterations (half steps) first save ``theta_t``; odd ones (full steps) sample with the
        half-step weights and then go back to ``theta_t`` (``anchor``) or after the backward
        (``midpoint``, in :meth:`on_before_optimizer_step`)."""
        extragradient = self.hparams.estimate_extra_grad
        if extragradient and iteration % 2 == 0:
            self.save_anchor()
        super().run_iteration(data, iteration)
        if extragradient and iteration % 2 == 1:
            if self.hparams.gradient_at == "anchor":
                self.restore_anchor()
            else:
                self._restore_before_step = True

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._restore_before_step:
            self._restore_before_step = False
            self.restore_anchor()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.anchor is not None:
            checkpoint["egpo_anchor"] = self.anchor

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.anchor = checkpoint.get("egpo_anchor")

    # ----------------------------------------------------------------- the loss
    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        stats = self.sequence_stats(batch)
        ratio_y, ratio_y_prime = stats.mean_ratios() if self.hparams.normalize_logprobs else stats.ratios()
        p_y, p_y_prime = batch["chosen_score"], batch["rejected_score"]
        beta = self.settings.beta
        loss = online_ipo_loss(ratio_y, ratio_y_prime, p_y, p_y_prime, beta).mean()
        gap = (ratio_y - ratio_y_prime).detach()
        ordered = (p_y > p_y_prime).float()  # pairs with a strict preference (chosen = the preferred one)
        return loss, {
            "log_ratio_gap": gap.mean(),
            "target_gap": ((p_y - p_y_prime) / beta).mean(),
            "reward_accuracy": ((gap > 0).float() * ordered).sum() / ordered.sum().clamp(min=1.0),
        }
