"""The registry of pairwise preference losses (the DPO family): one entry per ``loss_type``.

An entry binds a pure loss of :mod:`policylab.losses.preference` to what a trainer must know
about it: whether it needs a reference model, whether it reads per-token averages (token
counts), which per-pair batch fields it reads, and its hyperparameters with the paper's
defaults. It is called with a :class:`PairStats` record (summed completion log-probs of the
chosen and rejected responses under the policy and the reference, token counts, extra
per-pair fields), ``beta`` and its hyperparameters, and gives the per-pair loss ``[B]``. It
knows nothing of the module around it: the offline :class:`~policylab.modules.preference.DPO`
calls it on the log-probs of a batch of pairs, an online method on those of fresh samples.

A loss that carries state between steps (BCO's reward shift) declares its initial ``state``;
it is then called with the current state and ``update`` (True on training steps) and returns
``(loss, new_state)``. The caller keeps the state (the modules: buffers in their state dict,
:class:`~policylab.modules.preference.objective.PairwiseObjective`); this file stays pure.

Adding a loss: a pure function in :mod:`policylab.losses.preference` (cited, with the paper's
symbols), one :class:`PairwiseLoss` entry in :data:`PAIRWISE_LOSSES`, one test against
independent numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from policylab.losses import preference as P
from policylab.losses.inpo import inpo_loss


@dataclass
class PairStats:
    """Per-pair inputs of a pairwise loss (all ``[B]``): the summed completion log-probs of the
    chosen and rejected responses under the policy (``chosen``, ``rejected``) and the reference
    (``ref_chosen``, ``ref_rejected``; None without a reference), their completion token counts,
    and extra per-pair fields of the batch by name (``flip_rate``, ``semantic_distance``, ...)."""

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_tokens: Tensor | None = None
    rejected_tokens: Tensor | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def ratios(self) -> tuple[Tensor, Tensor]:
        """``(r_w, r_l)``, the policy-to-reference log-ratios (:func:`~policylab.losses.preference.log_ratios`)."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this loss needs reference log-probs (ref_chosen, ref_rejected), and the stats have none")
        return P.log_ratios(self.chosen, self.rejected, self.ref_chosen, self.ref_rejected)

    def mean_ratios(self) -> tuple[Tensor, Tensor]:
        """The log-ratios divided by each response's token count (per-token averages)."""
        chosen, rejected = self.ratios()
        chosen_tokens, rejected_tokens = self.tokens()
        return chosen / chosen_tokens, rejected / rejected_tokens

    def mean_log_probs(self) -> tuple[Tensor, Tensor]:
        """The policy's per-token average log-probs ``(1/|y|) log pi(y|x)`` of chosen and rejected."""
        chosen_tokens, rejected_tokens = self.tokens()
        return self.chosen / chosen_tokens, self.rejected / rejected_tokens

    def tokens(self) -> tuple[Tensor, Tensor]:
        if self.chosen_tokens is None or self.rejected_tokens is None:
            raise ValueError("this loss averages over tokens and needs chosen_tokens and rejected_tokens")
        return self.chosen_tokens, self.rejected_tokens

    def field(self, name: str, default: Any = None) -> Any:
        """The per-pair field ``name`` of the batch, or ``default`` when the batch has none."""
        return self.fields.get(name, default)


@dataclass(frozen=True)
class PairwiseLoss:
    """One loss type. ``fn(stats, beta, **hyperparameters)`` gives the per-pair loss ``[B]``; with
    ``state``, ``fn(stats, beta, state, update, **hyperparameters)`` gives ``(loss, new_state)``.

    - ``name``: the ``loss_type``; ``paper``: the citation;
    - ``reference``: needs reference log-probs (False: reference-free);
    - ``length_normalized``: reads per-token averages (needs token counts);
    - ``fields``: per-pair batch fields it needs; ``optional_fields``: read when present;
    - ``hyperparameters``: name -> the paper's default (``loss_kwargs`` overrides them);
    - ``check``: validates hyperparameter values, raising ValueError;
    - ``state``: name -> initial value of what it carries between steps (None: stateless).
    """

    name: str
    fn: Callable[..., Any]
    paper: str
    reference: bool = True
    length_normalized: bool = False
    fields: tuple[str, ...] = ()
    optional_fields: tuple[str, ...] = ()
    hyperparameters: Mapping[str, float] = field(default_factory=dict)
    check: Callable[..., None] | None = None
    state: Mapping[str, float] | None = None

    def resolve(self, loss_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The hyperparameters: the paper's defaults updated by ``loss_kwargs``; an unknown key
        or a bad value stops with a message naming it and the allowed keys."""
        loss_kwargs = dict(loss_kwargs or {})
        unknown = sorted(set(loss_kwargs) - set(self.hyperparameters))
        if unknown:
            allowed = ", ".join(f"{k} (default {v})" for k, v in self.hyperparameters.items()) or "none"
            raise ValueError(
                f"loss_kwargs of loss_type {self.name!r}: unknown key {', '.join(map(repr, unknown))}; "
                f"allowed: {allowed}"
            )
        resolved = {**self.hyperparameters, **loss_kwargs}
        for key, value in resolved.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"loss_kwargs of loss_type {self.name!r}: {key} must be a number, got {value!r}")
        if self.check is not None:
            self.check(**resolved)
        return resolved

    def initial_state(self) -> dict[str, Tensor]:
        """The state before the first step, as float32 scalars (empty when stateless)."""
        return {k: torch.tensor(float(v)) for k, v in (self.state or {}).items()}

    def __call__(
        self,
        stats: PairStats,
        beta: float,
        hyperparameters: Mapping[str, Any],
        state: Mapping[str, Tensor] | None = None,
        update: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(per-pair loss [B], new state)``; ``hyperparameters`` as :meth:`resolve` gives them.
        A stateful loss reads ``state`` (its :meth:`initial_state` when None) and, with
        ``update``, advances it; a stateless one returns ``{}``."""
        missing = [name for name in self.fields if name not in stats.fields]
        if missing:
            raise KeyError(
                f"loss_type {self.name!r} needs the per-pair field(s) {', '.join(missing)} in each batch: "
                "add them to the data (e.g. the datamodule's extra_fields)"
            )
        if self.state is None:
            return self.fn(stats, beta, **hyperparameters), {}
        return self.fn(stats, beta, dict(state or self.initial_state()), update, **hyperparameters)


def get_pairwise_loss(loss_type: str) -> PairwiseLoss:
    """The entry of ``loss_type``; an unknown name stops with the list of known ones."""
    if loss_type not in PAIRWISE_LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(sorted(PAIRWISE_LOSSES))}")
    return PAIRWISE_LOSSES[loss_type]


# --------------------------------------------------------------------------- entries' helpers
def _check_flip_rate(flip_rate: float) -> None:
    if not 0.0 <= flip_rate < 0.5:
        raise ValueError(f"loss_kwargs of loss_type 'robust': flip_rate must lie in [0, 0.5), got {flip_rate}")


def _check_epsilon(epsilon: float) -> None:
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"loss_kwargs of loss_type 'exo_pair': epsilon must lie in (0, 1), got {epsilon}")


def _bco_pair(stats: PairStats, beta: float, state: dict[str, Tensor], update: bool) -> tuple[Tensor, dict]:
    """BCO with its reward shift ``delta``: the mean over the training steps so far of each step's
    mean reward ``beta * r`` (chosen and rejected responses together), this step included;
    evaluation reads the shift without moving it."""
    chosen, rejected = stats.ratios()
    mean, count = state["shift"], state["steps"]
    if update:
        rewards = beta * torch.cat([chosen, rejected]).detach()
        count = count.to(rewards.device) + 1
        mean = mean.to(rewards.device) + (rewards.mean() - mean.to(rewards.device)) / count
    delta = mean.to(chosen.device)
    return P.bco_pair_loss(chosen, rejected, beta, delta), {"shift": mean, "steps": count}


#: loss_type -> its entry. The names follow TRL's ``DPOTrainer`` where it has the loss
#: (``sppo`` is its ``sppo_hard`` when the batch has no win rates).
PAIRWISE_LOSSES: dict[str, PairwiseLoss] = {
    entry.name: entry
    for entry in (
        PairwiseLoss(
            "sigmoid",
            lambda s, beta, label_smoothing: P.dpo_loss(*s.ratios(), beta, label_smoothing),
            paper="Rafailov et al., 2023 (DPO); label_smoothing > 0: cDPO (Mitchell, 2023)",
            hyperparameters={"label_smoothing": 0.0},
        ),
        PairwiseLoss(
            "robust",
            lambda s, beta, flip_rate: P.robust_dpo_loss(*s.ratios(), beta, s.field("flip_rate", flip_rate)),
            paper="Chowdhury et al., 2024, arXiv:2403.00409 (rDPO)",
            optional_fields=("flip_rate",),  # a per-pair rate; else the hyperparameter
            hyperparameters={"flip_rate": 0.1},
            check=_check_flip_rate,
        ),
        PairwiseLoss(
            "ipo",
            lambda s, beta: P.ipo_loss(*s.mean_ratios(), beta),
            paper="Azar et al., 2024 (IPO), on per-token averaged log-ratios as in TRL",
            length_normalized=True,
        ),
        PairwiseLoss(
            "hinge",
            lambda s, beta: P.hinge_loss(*s.ratios(), beta),
            paper="Liu et al., 2024 (RSO; SLiC's hinge)",
        ),
        PairwiseLoss(
            "nca_pair",
            lambda s, beta: P.nca_loss(*s.ratios(), beta),
            paper="Chen et al., 2024 (NCA)",
        ),
        PairwiseLoss(
            "bco_pair",
            _bco_pair,
            paper="Jung et al., 2024 (BCO), with its running reward shift",
            state={"shift": 0.0, "steps": 0.0},
        ),
        PairwiseLoss(
            "sppo",
            lambda s, beta: P.sppo_loss(
                *s.ratios(), beta, s.field("chosen_win_rate", 1.0), s.field("rejected_win_rate", 0.0)
            ),
            paper="Wu et al., 2024 (SPPO); hard labels (TRL's sppo_hard) without win rates",
            optional_fields=("chosen_win_rate", "rejected_win_rate"),
        ),
        PairwiseLoss(
            "rpo",
            lambda s, beta, alpha: P.rpo_loss(*s.ratios(), -s.mean_log_probs()[0], beta, alpha),
            paper="Pang et al., 2024 (RPO: DPO + alpha * length-normalized NLL of the chosen response)",
            length_normalized=True,
            hyperparameters={"alpha": 1.0},
        ),
        PairwiseLoss(
            "simpo",
            lambda s, beta, gamma: P.simpo_loss(*s.mean_log_probs(), beta, gamma),
            paper="Meng et al., 2024 (SimPO; the paper's beta is 2.0 to 2.5: set beta)",
            reference=False,
            length_normalized=True,
            hyperparameters={"gamma": 0.5},
        ),
        PairwiseLoss(
            "sem_dpo",
            lambda s, beta, alpha: P.sem_dpo_loss(*s.ratios(), s.field("semantic_distance"), beta, alpha),
            paper="Sem-DPO, arXiv:2507.20133, 2025",
            fields=("semantic_distance",),
            hyperparameters={"alpha": 1.0},
        ),
        PairwiseLoss(
            "apo_zero",
            lambda s, beta: P.apo_zero_loss(*s.ratios(), beta),
            paper="D'Oosterlinck et al., 2024, arXiv:2408.06266 (APO-zero, eq. 7)",
        ),
        PairwiseLoss(
            "inpo",
            lambda s, beta, tau: inpo_loss(
                s.chosen,
                s.rejected,
                s.ref_chosen,
                s.ref_rejected,
                s.field("chosen_iterate_logp", s.ref_chosen),
                s.field("rejected_iterate_logp", s.ref_rejected),
                beta,
                tau,
            ),
            paper="Zhang et al., ICLR 2025, arXiv:2407.00617 (INPO; beta is the paper's eta, target 1/(2 eta)); "
            "without pi_t's log-probs (offline pairs) pi_t is the reference, as in INPO's first iteration",
            optional_fields=("chosen_iterate_logp", "rejected_iterate_logp"),  # log pi_t of the pair
            hyperparameters={"tau": 0.0025},
        ),
        PairwiseLoss(
            "exo_pair",
            lambda s, beta, epsilon: P.exo_pair_loss(*s.ratios(), beta, epsilon),
            paper="Ji et al., 2024, arXiv:2402.00856 (EXO-pref: reverse KL to the labels (1 - eps, eps))",
            hyperparameters={"epsilon": 1e-3},
            check=_check_epsilon,
        ),
        PairwiseLoss(
            # Maximum likelihood of the chosen response only, the rejected one unused (no negative
            # gradient): offline on fixed pairs it is Pref-FT, online with best_vs_worst pairs it is
            # iterated best-of-n SFT. TRL's value: the chosen tokens' NLL averaged over all chosen
            # tokens of the batch, here as per-pair terms -log pi(y_w) / mean(|y_w|) whose mean it is.
            "sft",
            lambda s, beta: -s.chosen / s.tokens()[0].mean(),
            paper="NLL of the chosen response (TRL's loss_type 'sft'; Pref-FT / best-of-n SFT in Tajwar et al., "
            "2024, arXiv:2404.14367); beta unused",
            reference=False,
            length_normalized=True,
        ),
    )
}
