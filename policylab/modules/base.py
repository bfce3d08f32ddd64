"""What every RL actor-critic module shares: normalization buffers, acting, stepping, logging cadence."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from policylab.nn.normalization import ObservationNormalizer

# Checkpoints of these modules are meant to hold the weights after the step's updates.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


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


class RLModule(L.LightningModule):
    """Base of the offline, offline-to-online and online RL modules.

    - ``obs_normalizer`` holds the dataset's observation mean/std as buffers (copied from the
      datamodule at ``setup``; saved in checkpoints; used by the evaluation env and by online
      data collection). Without statistics it is the identity.
    - Manual optimization: each ``training_step`` makes exactly one *counted* optimizer step (the
      first optimizer), so ``trainer.global_step`` and ``max_steps`` count gradient steps of the
      method, not optimizer calls. Further optimizers step through :meth:`step_uncounted`. In
      float32 on one device, with no hook observing them, both call ``backward`` and the
      optimizer directly rather than through Lightning's wrappers (same numbers, less overhead).
    - :meth:`policy_action` maps normalized observations to the deterministic evaluation action;
      :meth:`exploration_action` to the action taken when collecting data online.
    - A subclass implements :meth:`update` (one gradient step of every network, returning the
      metrics to log) and, for delayed actor updates, :meth:`actor_update_due`; the shared
      ``training_step`` logs the metrics every ``log_every_n_steps`` and steps LR schedules.
    - ``compile=True`` wraps the methods named in ``compiled_losses`` in ``torch.compile`` (with
      ``compile_mode``) when training starts; the numbers stay those of the eager module.
    - ``cuda_graph=True`` records the whole update (forwards, backwards, optimizer and target
      steps) as CUDA graphs on a single CUDA device and replays them: one launch per step
      instead of hundreds. Ignored on a CPU.
    """

    #: the loss methods ``compile=True`` wraps in ``torch.compile`` (each subclass names its own)
    compiled_losses: tuple[str, ...] = ()

    #: eager steps before the first CUDA graph is recorded (optimizer state, cuBLAS workspaces)
    cuda_graph_warmup_steps: int = 3

    def __init__(
        self, obs_dim: int, compile: bool = False, compile_mode: str | None = None, cuda_graph: bool = False
    ) -> None:
        super().__init__()
        if compile and cuda_graph:
            raise ValueError(
                "choose one of compile=True and cuda_graph=True (for CUDA graphs with torch.compile use compile_mode='reduce-overhead')"
            )
        self.automatic_optimization = False
        self.obs_normalizer = ObservationNormalizer(obs_dim)
        self.compile_losses, self.compile_mode, self._compiled = compile, compile_mode, False
        self.cuda_graph = self._use_cuda_graphs = cuda_graph
        self._direct_steps = False  # decided at fit start (_can_step_directly)
        self._graphs: dict[tuple[bool, bool], tuple[torch.cuda.CUDAGraph, tuple, dict]] = {}
        self._graph_warmup_left = self.cuda_graph_warmup_steps

    def __setattr__(self, name: str, value) -> None:
        # Lightning records the hook being run in ``_current_fx_name`` around every hook call,
        # about 40 times per training step. nn.Module.__setattr__ checks each assignment against
        # parameters, buffers and submodules; this plain bookkeeping attribute needs none of it.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        stats = getattr(datamodule, "observation_statistics", None)
        if stats is not None:
            self.obs_normalizer.set_statistics(*stats)
        if self.compile_losses and not self._compiled:
            # Compiled forward and backward of each loss; the optimizer steps stay eager. On a CPU
            # these updates are matmul-bound and compiling does not pay (benchmarks/RESULTS.md);
            # on a GPU, compile_mode="reduce-overhead" adds CUDA graphs.
            for name in self.compiled_losses:
                setattr(self, name, torch.compile(getattr(self, name), mode=self.compile_mode))
            self._compiled = True

        self._use_cuda_graphs = self.cuda_graph
        if self.cuda_graph and self._trainer is not None:
            precision = str(self.trainer.precision)
            if self.trainer.world_size > 1 or precision not in ("32-true", "32"):
                rank_zero_warn(
                    f"cuda_graph=True records the update on one device in float32; this run has "
                    f"{self.trainer.world_size} processes and precision {precision}, so the update runs eagerly"
                )
                self._use_cuda_graphs = False

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._compiled and "reduce-overhead" in (self.compile_mode or ""):
            # CUDA graphs: outputs of the last step's graph replays may be overwritten from here on.
            torch.compiler.cudagraph_mark_step_begin()

    # ----------------------------------------------------------------- the training step
    def update(self, batch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """One gradient step of every network on ``batch``: exactly one :meth:`step_counted`, the
        other optimizers through :meth:`step_uncounted`, target updates. Returns the metrics to
        log when ``log`` is true (tensors; an empty dict otherwise). Device work only: no
        ``.item()``, no ``self.log``, and the control flow may depend on ``update_actor`` and
        ``log`` alone (a CUDA graph is recorded per combination)."""
        raise NotImplementedError

    def actor_update_due(self, step: int) -> bool:
        """Whether the step ``step`` (the global step before it) updates the actor and the target
        networks: every ``policy_freq``-th step for methods with that hyperparameter (TD3's
        delayed actor updates), else every step."""
        return (step + 1) % self.hparams.get("policy_freq", 1) == 0

    def training_step(self, batch, batch_idx: int) -> None:
        step, log = self.global_step, self.should_log()
        update_actor = self.actor_update_due(step)
        if self._use_cuda_graphs and self.device.type == "cuda":
            metrics = self._graphed_update(batch, update_actor, log)
        else:
            metrics = self.update(batch, update_actor, log)
        for config in self.trainer.lr_scheduler_configs:
            config.scheduler.step()
        if log and metrics:
            self.check_finite(**metrics)
            self.log_dict(metrics)

    def reset_cuda_graphs(self) -> None:
        """Forget the recorded graphs: they hold Python numbers of the update (``alpha``, masks)
        and the optimizers of one ``fit`` as constants, so a change of those must be followed by
        this (each ``fit`` and the online phase do it)."""
        self._graphs.clear()

    def on_fit_start(self) -> None:
        self._direct_steps = self._can_step_directly()
        self.reset_cuda_graphs()
        self._graph_warmup_left = self.cuda_graph_warmup_steps

    def on_train_start(self) -> None:
        # After any checkpoint restore: a run resumed without CUDA graphs (on a CPU, say) from a
        # checkpoint written with them must not keep Adam's "capturable" mode, which needs CUDA.
        graphs = self._use_cuda_graphs and self.device.type == "cuda"
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["capturable"] = graphs and group.get("capturable", False)

    def _graphed_update(self, batch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """:meth:`update` as replays of recorded CUDA graphs, one per (update_actor, log); the
        batch is copied into the graph's input tensors. The first steps run eagerly on a side
        stream, as CUDA graph recording requires."""
        if self._graph_warmup_left > 0:
            self._graph_warmup_left -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                metrics = self.update(batch, update_actor, log)
            torch.cuda.current_stream().wait_stream(side)
            return metrics
        key = (update_actor, log)
        if key not in self._graphs:
            if self.trainer.lr_scheduler_configs:
                raise ValueError(
                    f"{type(self).__name__}: cuda_graph=True does not support learning-rate schedules (they would be frozen in the graph)"
                )
            for optimizer in self.trainer.optimizers:  # fused Adam keeps its step count on the device
                for group in optimizer.param_groups:
                    group["capturable"] = True
            inputs = tuple(t.clone() for t in batch)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records without running; Lightning counts the step here
                metrics = self.update(type(batch)(*inputs), update_actor, log)
            graph.replay()
            self._graphs[key] = (graph, inputs, metrics)
            return metrics
        graph, inputs, metrics = self._graphs[key]
        for target, source in zip(inputs, batch):
            target.copy_(source, non_blocking=True)
        graph.replay()
        self._count_training_step()
        return metrics

    # ----------------------------------------------------------------- acting
    def policy_action(self, obs: Tensor) -> Tensor:
        """Deterministic action for a batch of normalized observations."""
        raise NotImplementedError

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """Action for online data collection. Deterministic actors add Gaussian noise of standard
        deviation ``noise_std * max_action`` and clip to the action box (TD3's exploration);
        stochastic actors override this to sample from their policy."""
        action = self.policy_action(obs)
        bound = float(getattr(self, "max_action", 1.0))
        noise = torch.randn(action.shape, device=action.device, generator=generator) * (noise_std * bound)
        return (action + noise).clamp(-bound, bound)

    def on_online_start(self) -> None:
        """Called by :class:`~policylab.callbacks.EnvInteraction` when online collection begins
        (and again when a run resumes in the online phase): the place for a method to change
        its regularization for finetuning. The default changes nothing."""

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """numpy in, numpy out: the evaluation policy on normalized observations."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.policy_action(obs_t).cpu().numpy()

    @torch.no_grad()
    def explore(self, obs: np.ndarray, noise_std: float = 0.1, generator: torch.Generator | None = None) -> np.ndarray:
        """numpy in, numpy out: :meth:`exploration_action` on normalized observations."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.exploration_action(obs_t, noise_std, generator).cpu().numpy()

    # ----------------------------------------------------------------- optimization helpers
    def should_log(self) -> bool:
        """True on the steps whose metrics Lightning writes (``Trainer(log_every_n_steps)``).

        Call before the step's counted optimizer step. Logging only then keeps ``self.log`` and
        any host-device sync out of the other steps.
        """
        return (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def step_counted(self, optimizer, loss: Tensor) -> None:
        """zero_grad, backward, step through Lightning: advances ``global_step`` by one."""
        if self._direct_steps:
            self.step_uncounted(optimizer, loss)
            self._count_training_step()
            return
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def step_uncounted(self, optimizer, loss: Tensor) -> None:
        """zero_grad, backward, step through the strategy (precision plugin, scaler) without
        advancing ``global_step``: for the extra optimizers of one training step."""
        raw = getattr(optimizer, "optimizer", optimizer)
        raw.zero_grad(set_to_none=True)
        if self._direct_steps:
            loss.backward()
            raw.step()
            return
        self.manual_backward(loss)
        self.trainer.strategy.optimizer_step(raw, closure=_no_closure, model=self)

    def _count_training_step(self) -> None:
        """Advance ``global_step`` as ``LightningOptimizer.step`` does, for a counted step made
        without it (a replayed CUDA graph, a direct step)."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def _can_step_directly(self) -> bool:
        """Whether backward and optimizer steps may skip Lightning's wrappers (a few hundred
        microseconds a step on a CPU): float32 on a single device, and no hook of the module or
        of a callback that would observe them."""
        trainer = self.trainer
        if str(trainer.precision) not in ("32-true", "32") or not isinstance(trainer.strategy, SingleDeviceStrategy):
            return False
        hooks = ("backward", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
        if any(is_overridden(hook, self, L.LightningModule) for hook in hooks):
            return False
        return not any(is_overridden(hook, callback, Callback) for callback in trainer.callbacks for hook in hooks[1:])

    def check_finite(self, **values: Tensor | float) -> None:
        """Stop with the offending name and step when a metric is NaN or inf (costs one sync; call
        only on logging steps)."""
        values = {name: torch.as_tensor(value) for name, value in values.items()}
        if torch.isfinite(torch.cat([v.detach().float().reshape(-1) for v in values.values()])).all():
            return
        for name, value in values.items():
            if not torch.isfinite(value).all():
                raise FloatingPointError(
                    f"{type(self).__name__}: {name} is {value.detach().float().cpu().tolist()} at step "
                    f"{self.global_step}; lower the learning rates or check the data for extreme values"
                )


def _no_closure() -> None:
    return None


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam using the fused kernel where the install supports it (CPU and CUDA in torch >= 2.4)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)
