"""The contract of an RL method: what every offline, offline-to-online and online RL module provides.

A method subclasses :class:`RLModule` and writes, in its own file:

- ``__init__``: its hyperparameters (the paper's defaults) and networks, after
  ``super().__init__(obs_dim, max_action, policy_freq, compile, compile_mode, cuda_graph)``,
  which records the hyperparameters and sets ``max_action`` and ``policy_freq``;
- :meth:`named_optimizers` (``{"critic": ..., "actor": ...}``) and ``counted_optimizer``, the
  name whose step is the training step ``max_steps`` counts; :meth:`named_lr_schedulers` if any;
- :meth:`update`: one gradient step of every network, ``self.step(name, loss)`` per optimizer,
  device work only; :meth:`policy_action`; :meth:`diagnostics` for ``validate``/``test``.

How the update runs (direct optimizer steps, ``compile``, CUDA graphs) is
:class:`~policylab.modules.fast_update.FastUpdate`'s business, not the method's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from policylab.modules.fast_update import FastUpdate
from policylab.nn.normalization import ObservationNormalizer


class RLModule(FastUpdate):
    """Base of the RL modules: observation normalization, acting, named optimizer steps, logging.

    - ``obs_normalizer`` holds the dataset's observation mean/std as buffers (copied from the
      datamodule at ``setup``, saved in checkpoints, used by the evaluation env and online
      collection); without statistics it is the identity.
    - Each ``training_step`` makes exactly one step of ``counted_optimizer``, so ``global_step``
      counts gradient steps of the method; ``update_actor`` is true every ``policy_freq`` steps.
    - Metrics returned by :meth:`update` are checked for NaN/inf and logged every
      ``Trainer(log_every_n_steps)`` steps; :meth:`diagnostics` goes to ``val/`` and ``test/``.
    """

    #: the optimizer (a key of :meth:`named_optimizers`) whose step counts as the training step
    counted_optimizer: str = "critic"

    def __init__(
        self,
        obs_dim: int,
        max_action: float = 1.0,
        policy_freq: int = 1,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(compile, compile_mode, cuda_graph)
        if policy_freq < 1:
            raise ValueError(f"policy_freq must be at least 1, got {policy_freq}")
        # the method's __init__ arguments, as save_hyperparameters() called there would record them
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        self.obs_normalizer = ObservationNormalizer(obs_dim)
        self.max_action, self.policy_freq = float(max_action), int(policy_freq)
        self._optimizer_names: list[str] = []
        self._named: dict = {}

    def setup(self, stage: str) -> None:
        stats = getattr(self.trainer.datamodule, "observation_statistics", None)
        if stats is not None:
            self.obs_normalizer.set_statistics(*stats)
        super().setup(stage)

    # ----------------------------------------------------------------- what a method implements
    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by name, e.g. ``{"critic": adam(...), "actor": adam(...)}``."""
        raise NotImplementedError

    def named_lr_schedulers(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, object]:
        """Learning-rate schedules by optimizer name, stepped once per training step (none by default)."""
        return {}

    def update(self, batch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """One gradient step of every network on ``batch``: :meth:`step` once per optimizer, then
        target updates. Returns the metrics to log when ``log`` is true (tensors; ``{}`` otherwise).
        Device work only: no ``.item()``, no ``self.log``, branches on ``update_actor`` and ``log`` only."""
        raise NotImplementedError

    def policy_action(self, obs: Tensor) -> Tensor:
        """Deterministic evaluation action for a batch of normalized observations."""
        raise NotImplementedError

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """Action for online collection: the policy action plus Gaussian noise of standard deviation
        ``noise_std * max_action``, clipped to the action box (TD3); stochastic actors sample instead."""
        action = self.policy_action(obs)
        noise = torch.randn(action.shape, device=action.device, generator=generator) * (noise_std * self.max_action)
        return (action + noise).clamp(-self.max_action, self.max_action)

    def diagnostics(self, batch) -> dict[str, Tensor]:
        """Offline diagnostics on a fixed dataset batch, logged as ``val/<name>`` and ``test/<name>``;
        methods add theirs to ``super().diagnostics(batch)``."""
        return {"action_mse": (self.policy_action(batch.obs) - batch.action).pow(2).mean()}

    def on_online_start(self) -> None:
        """Called by :class:`~policylab.callbacks.EnvInteraction` when online collection begins (and
        again when a run resumes in the online phase): where a method changes its regularization."""

    # ----------------------------------------------------------------- the contract's mechanics
    def configure_optimizers(self):
        named = self.named_optimizers()
        if self.counted_optimizer not in named:
            raise ValueError(
                f"{type(self).__name__}.counted_optimizer is {self.counted_optimizer!r}, "
                f"not one of its optimizers {list(named)}"
            )
        schedules = self.named_lr_schedulers(named)
        self._optimizer_names = list(named)
        return [
            {"optimizer": opt, **({"lr_scheduler": schedules[name]} if name in schedules else {})}
            for name, opt in named.items()
        ]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        optimizers = self.optimizers()
        self._named = dict(zip(self._optimizer_names, optimizers if isinstance(optimizers, list) else [optimizers]))

    def step(self, name: str, loss: Tensor) -> None:
        """zero_grad, backward and step of the optimizer ``name``; the step of ``counted_optimizer``
        advances ``global_step``."""
        self.optimizer_step_(self._named[name], loss, counted=name == self.counted_optimizer)

    def actor_update_due(self, step: int) -> bool:
        """Whether step ``step`` (``global_step`` before it) updates the actor and targets (TD3's delay)."""
        return (step + 1) % self.policy_freq == 0

    def training_step(self, batch, batch_idx: int) -> None:
        log = self.should_log()
        metrics = self.run_update(batch, self.actor_update_due(self.global_step), log)
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.step()
        if log and metrics:
            self.check_finite(**metrics)
            self.log_dict(metrics)

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log_dict({f"val/{name}": value for name, value in self.diagnostics(batch).items()})

    def test_step(self, batch, batch_idx: int) -> None:
        self.log_dict({f"test/{name}": value for name, value in self.diagnostics(batch).items()})

    def should_log(self) -> bool:
        """True on the steps whose metrics Lightning writes (``Trainer(log_every_n_steps)``)."""
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def check_finite(self, **values: Tensor | float) -> None:
        """Stop with the offending name and step when a metric is NaN or inf (one sync; logging steps only)."""
        values = {name: torch.as_tensor(value) for name, value in values.items()}
        if torch.isfinite(torch.cat([v.detach().float().reshape(-1) for v in values.values()])).all():
            return
        for name, value in values.items():
            if not torch.isfinite(value).all():
                raise FloatingPointError(
                    f"{type(self).__name__}: {name} is {value.detach().float().cpu().tolist()} at step "
                    f"{self.global_step}; lower the learning rates or check the data for extreme values"
                )

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """numpy in, numpy out: the evaluation policy on normalized observations."""
        return self.policy_action(torch.as_tensor(obs, dtype=torch.float32, device=self.device)).cpu().numpy()

    @torch.no_grad()
    def explore(self, obs: np.ndarray, noise_std: float = 0.1, generator: torch.Generator | None = None) -> np.ndarray:
        """numpy in, numpy out: :meth:`exploration_action` on normalized observations."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.exploration_action(obs_t, noise_std, generator).cpu().numpy()


@contextlib.contextmanager
def no_param_grads(module: nn.Module) -> Iterator[None]:
    """Let gradients flow *through* ``module`` to its inputs without computing its own weight gradients."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam using the fused kernel where the install supports it (CPU and CUDA in torch >= 2.4)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)
