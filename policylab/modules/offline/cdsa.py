"""CDSA: Liu, Yang, Li, "CDSA: Conservative Denoising Score-based Algorithm for Offline
Reinforcement Learning", arXiv 2406.07541, 2024 (no public code).

Denoising score models of the dataset's density, trained once on the offline data, adjust the
actions of an already trained policy at evaluation time (a plug-in: the policy is not retrained):
the action is denoised under the action score, and the predicted next state is denoised under the
state score and turned back into an action correction by an inverse-dynamics model.

The paper's body was not readable here (abstract and summaries only), so the update and the
defaults are derived; :mod:`policylab.losses.cdsa` numbers the equations (C1)-(C5). Choices:

- Two noise-conditional score models (:class:`~policylab.nn.score.NoiseConditionalScore`): of
  ``a`` given ``s`` (the action part of the joint density's gradient) and of ``s`` (normalized
  states), trained by (C2) over ``num_noise_levels`` geometric levels (C1) from ``sigma_max`` 1 to
  ``sigma_min`` 0.01 (Song & Ermon's recipe; with standardized states and actions in ``[-1, 1]``).
- "Inverse dynamics turns state guidance into actions" (the paper's summary) needs the next state
  the action leads to; the paper assumes a deterministic MDP, so a forward model ``f(s, a) -> s'``
  (predicting ``s' - s``) supplies it (C5). Inverse and forward models are MSE regressions.
- Adjustment defaults (C4, C5): two action steps at ``sigma = 0.1`` with ``eta = 0.5``; state
  guidance at ``sigma_s = 0.1`` with weight 1. Small levels keep the correction local: the action
  moves only where the policy leaves the data.
- Without a backbone the module acts with its own denoised behaviour action: (C3) with ``eta = 1``
  over all levels from ``a = 0`` (a score-based behaviour cloning), then the same adjustment.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Sequence

import torch
from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.cdsa import cdsa_adjust_action, denoise, denoising_score_matching_loss, geometric_noise_levels
from policylab.modules.base import RLModule, adam
from policylab.nn import mlp
from policylab.nn.score import NoiseConditionalScore


def load_policy_checkpoint(path: str) -> RLModule:
    """The policylab RL module saved in the checkpoint ``path`` (by ``python cli.py fit``), in eval
    mode: loaded weights-only, its class taken from the checkpoint's ``_class_path`` and imported
    only from ``policylab``."""
    from policylab.cli import CheckpointError, load_checkpoint, untrusted_class_paths

    checkpoint = load_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    if class_path is None:
        raise CheckpointError(
            f"{path} does not record its model class (_class_path): use a checkpoint written by "
            "`python cli.py fit`, or build the policy yourself and call CDSA.set_backbone(policy)"
        )
    if untrusted_class_paths({"class_path": class_path, **hparams}) or not class_path.startswith("policylab."):
        raise CheckpointError(f"refused to use {path}: its model class {class_path} is not a policylab module")
    module_name, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    if not (isinstance(cls, type) and issubclass(cls, RLModule)):
        raise CheckpointError(f"{path} holds a {class_path}, not an RL policy CDSA can adjust")
    # built in an empty context: under LightningCLI, the hyperparameters it hands to the module being
    # instantiated (CDSA's) would otherwise be recorded as the backbone's too
    policy = contextvars.Context().run(cls, **hparams)
    policy.load_state_dict(checkpoint["state_dict"])
    return policy.eval()


class CDSA(RLModule):
    """CDSA's score models (trained here) and a frozen backbone policy whose actions they adjust.

    One training step: one Adam step on the sum of the two score-matching losses (C2), the
    inverse-dynamics and the forward-model MSE. The backbone (``backbone_checkpoint``, a policylab
    checkpoint such as TD3+BC's or IQL's ``last.ckpt``, or :meth:`set_backbone`) never changes;
    its weights are part of CDSA's checkpoints. Its observation statistics must equal the data's.

    ``policy_action``: the backbone's action (or the denoised behaviour action without one),
    adjusted by :func:`~policylab.losses.cdsa.cdsa_adjust_action`; ``state_weight=0`` keeps only
    the action-score steps, ``action_steps=0`` only the state guidance.
    """

    counted_optimizer = "score"
    compiled_losses = ("score_losses",)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        backbone_checkpoint: str | None = None,
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        num_noise_levels: int = 10,
        action_sigma: float = 0.1,
        action_step_size: float = 0.5,
        action_steps: int = 2,
        state_sigma: float = 0.1,
        state_weight: float = 1.0,
        lr: float = 3e-4,
        hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        if action_steps < 0 or state_weight < 0:
            raise ValueError(f"action_steps and state_weight must be >= 0, got {action_steps}, {state_weight}")
        super().__init__(obs_dim, max_action, 1, compile, compile_mode, cuda_graph)
        self.register_buffer("noise_levels", geometric_noise_levels(sigma_max, sigma_min, num_noise_levels))
        self.action_score = NoiseConditionalScore(action_dim, obs_dim, hidden_dims)
        self.state_score = NoiseConditionalScore(obs_dim, 0, hidden_dims)
        self.inverse_dynamics = mlp(2 * obs_dim, action_dim, hidden_dims)
        self.forward_model = mlp(obs_dim + action_dim, obs_dim, hidden_dims)
        self.backbone: RLModule | None = None
        if backbone_checkpoint is not None:
            self.set_backbone(load_policy_checkpoint(backbone_checkpoint))

    # ----------------------------------------------------------------- the backbone
    def set_backbone(self, policy: RLModule) -> None:
        """Adjust ``policy``'s actions from now on; it is frozen and kept in eval mode."""
        for p in policy.parameters():
            p.requires_grad_(False)
        self.backbone = policy.eval().to(self.noise_levels.device)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.backbone is not None:
            mine, theirs = self.obs_normalizer, self.backbone.obs_normalizer
            same = all(torch.allclose(a, b.to(a)) for a, b in ((mine.mean, theirs.mean), (mine.std, theirs.std)))
            if not same:
                raise ValueError(
                    "CDSA: the backbone policy was trained with other observation statistics than this "
                    "dataset's: train the score models on the backbone's dataset with the same normalization"
                )

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: no dropout or batch-norm updates whatever the wrapper's mode
        return self

    # ----------------------------------------------------------------- the models as callables
    def _action_score(self, action: Tensor, sigma: float, obs: Tensor) -> Tensor:
        return self.action_score(action, sigma, obs)

    def _state_score(self, state: Tensor, sigma: float) -> Tensor:
        return self.state_score(state, sigma)

    def _inverse(self, obs: Tensor, next_obs: Tensor) -> Tensor:
        return self.inverse_dynamics(torch.cat([obs, next_obs], dim=-1))

    def _forward(self, obs: Tensor, action: Tensor) -> Tensor:
        return obs + self.forward_model(torch.cat([obs, action], dim=-1))

    # ----------------------------------------------------------------- acting
    def behavior_action(self, obs: Tensor) -> Tensor:
        """The denoised behaviour action: (C3) with ``eta = 1`` over every noise level from ``a = 0``."""
        start = torch.zeros(obs.shape[0], self.action_score.dim, device=obs.device, dtype=obs.dtype)
        action = denoise(start, lambda a, sigma: self._action_score(a, sigma, obs), self.noise_levels.tolist())
        return action.clamp(-self.max_action, self.max_action)

    def base_action(self, obs: Tensor) -> Tensor:
        """The action before adjustment: the backbone's, or :meth:`behavior_action` without one."""
        return self.backbone.policy_action(obs) if self.backbone is not None else self.behavior_action(obs)

    def adjust(self, obs: Tensor, action: Tensor) -> Tensor:
        """(C4) and (C5) with this module's models and settings."""
        hp = self.hparams
        return cdsa_adjust_action(
            obs,
            action,
            self._action_score,
            sigma=hp.action_sigma,
            step_size=hp.action_step_size,
            steps=hp.action_steps,
            max_action=self.max_action,
            state_score=self._state_score,
            forward_model=self._forward,
            inverse_dynamics=self._inverse,
            state_sigma=hp.state_sigma,
            state_weight=hp.state_weight,
        )

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.adjust(obs, self.base_action(obs))

    # ----------------------------------------------------------------- training
    def named_optimizers(self):
        own = [self.action_score, self.state_score, self.inverse_dynamics, self.forward_model]
        return {"score": adam([p for m in own for p in m.parameters()], self.hparams.lr)}

    def score_losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """(C2) for the action score (noise on ``a``, given ``s``) and the state score (noise on
        ``s``), one random level per row; MSE of the inverse-dynamics and forward models."""
        levels = self.noise_levels
        n = batch.obs.shape[0]
        sigma_a = levels[torch.randint(len(levels), (n,), device=levels.device)].unsqueeze(-1)
        sigma_s = levels[torch.randint(len(levels), (n,), device=levels.device)].unsqueeze(-1)
        noise_a, noise_s = torch.randn_like(batch.action), torch.randn_like(batch.obs)
        score_a = self.action_score(batch.action + sigma_a * noise_a, sigma_a, batch.obs)
        score_s = self.state_score(batch.obs + sigma_s * noise_s, sigma_s)
        return {
            "dsm_action": denoising_score_matching_loss(score_a, noise_a, sigma_a),
            "dsm_state": denoising_score_matching_loss(score_s, noise_s, sigma_s),
            "inverse_dynamics_mse": (self._inverse(batch.obs, batch.next_obs) - batch.action).pow(2).mean(),
            "forward_mse": (self._forward(batch.obs, batch.action) - batch.next_obs).pow(2).mean(),
        }

    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        losses = self.score_losses(batch)
        total = sum(losses.values())
        self.step("score", total)
        return {f"train/{name}": value.detach() for name, value in losses.items()} if log else {}

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """The training losses on a dataset batch, and how far the adjustment moves the base
        action (``adjustment``, mean absolute change per dimension)."""
        base = self.base_action(batch.obs)
        adjusted = self.adjust(batch.obs, base)
        return {
            "action_mse": (adjusted - batch.action).pow(2).mean(),
            "base_action_mse": (base - batch.action).pow(2).mean(),
            "adjustment": (adjusted - base).abs().mean(),
            **self.score_losses(batch),
        }
