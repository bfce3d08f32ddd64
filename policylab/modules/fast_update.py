"""How an RL module's ``update()`` is run, not what it computes: the only code in policylab that
touches Lightning's internals. :class:`~policylab.modules.base.RLModule` derives from
:class:`FastUpdate`; a method author writes ``update()`` as device work only (no ``.item()``, no
``self.log``, control flow on its ``update_actor`` and ``log`` arguments alone) and meets none
of what follows.

- **Direct steps** (automatic): in float32 on one device, when no hook of the module or of a
  callback observes backward or optimizer steps, ``loss.backward(); optimizer.step()`` replace
  Lightning's ``manual_backward`` and strategy ``optimizer_step`` (the same numbers, a few hundred
  microseconds less per step on a CPU). The counted step then advances Lightning's step counter
  (``fit_loop.epoch_loop.manual_optimization.optim_step_progress``) as ``LightningOptimizer.step``
  would, so ``global_step`` and ``max_steps`` keep counting gradient steps.
- **compile=True** wraps the loss methods a module names in ``compiled_losses`` in
  ``torch.compile`` (``compile_mode``) at setup; the optimizer steps stay eager.
- **cuda_graph=True** records the whole update (forwards, backwards, optimizer and target steps)
  as one CUDA graph per ``(update_actor, log)`` after ``cuda_graph_warmup_steps`` eager steps
  and replays it with the batch copied into the graph's inputs: one launch per step instead of
  hundreds. Only on one CUDA device in float32 (elsewhere the update runs eagerly, with a warning
  where the run asked for graphs). Adam is switched to ``capturable`` for the recording and back
  when a run continues without graphs (a checkpoint resumed on a CPU).
- A graph holds the Python numbers ``update()`` read as constants. Assigning a new number to a
  public attribute of the module (A2PR's ``alpha`` and ``mask`` when finetuning starts) forgets
  the recorded graphs, and every ``fit`` records afresh; nothing else needs resetting.
- Lightning records the running hook in ``_current_fx_name`` about 40 times a step; that plain
  attribute skips ``nn.Module.__setattr__``'s parameter/buffer/submodule checks.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

# Checkpoints of these modules are meant to hold the weights after the step's updates.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

_BACKWARD_HOOKS = ("backward", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


class FastUpdate(L.LightningModule):
    """Manual optimization whose update runs eagerly, compiled, or as replayed CUDA graphs.

    Subclasses call :meth:`run_update` from ``training_step`` and :meth:`optimizer_step_` for each
    optimizer step (``counted=True`` for the one step that advances ``global_step``).
    """

    #: the loss methods ``compile=True`` wraps in ``torch.compile`` (each module names its own)
    compiled_losses: tuple[str, ...] = ()
    #: eager steps before the first CUDA graph is recorded (optimizer state, cuBLAS workspaces)
    cuda_graph_warmup_steps: int = 3

    def __init__(self, compile: bool = False, compile_mode: str | None = None, cuda_graph: bool = False) -> None:
        super().__init__()
        if compile and cuda_graph:
            raise ValueError(
                "choose one of compile=True and cuda_graph=True "
                "(for CUDA graphs with torch.compile use compile_mode='reduce-overhead')"
            )
        self.automatic_optimization = False
        self._compile, self._compile_mode, self._compiled = compile, compile_mode, False
        self._cuda_graph = self._use_cuda_graphs = cuda_graph
        self._direct_steps = False  # decided when fit starts
        self._graphs: dict[tuple[bool, bool], tuple[torch.cuda.CUDAGraph, tuple, dict]] = {}
        self._graph_warmup_left = self.cuda_graph_warmup_steps

    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)
        if self.__dict__.get("_graphs") and isinstance(value, (int, float)) and name[0] != "_" and name != "training":
            self._graphs.clear()  # a number update() may read changed: record the graphs again

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str) -> None:
        if self._compile and not self._compiled:
            # On a CPU these updates are matmul-bound and compiling does not pay (benchmarks/RESULTS.md);
            # on a GPU, compile_mode="reduce-overhead" adds CUDA graphs.
            for name in self.compiled_losses:
                setattr(self, name, torch.compile(getattr(self, name), mode=self._compile_mode))
            self._compiled = True
        self._use_cuda_graphs = self._cuda_graph
        if self._cuda_graph and self._trainer is not None:
            precision = str(self.trainer.precision)
            if self.trainer.world_size > 1 or precision not in ("32-true", "32"):
                rank_zero_warn(
                    f"cuda_graph=True records the update on one device in float32; this run has "
                    f"{self.trainer.world_size} processes and precision {precision}, so the update runs eagerly"
                )
                self._use_cuda_graphs = False

    def on_fit_start(self) -> None:
        self._direct_steps = self._can_step_directly()
        self._graphs.clear()
        self._graph_warmup_left = self.cuda_graph_warmup_steps

    def on_train_start(self) -> None:
        # After any checkpoint restore: Adam's "capturable" mode of a graph run needs CUDA.
        graphs = self._graphing()
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["capturable"] = graphs and group.get("capturable", False)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._compiled and "reduce-overhead" in (self._compile_mode or ""):
            # CUDA graphs of torch.compile: the last step's outputs may be overwritten from here on.
            torch.compiler.cudagraph_mark_step_begin()

    # ----------------------------------------------------------------- what the module calls
    def run_update(self, batch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """``self.update(batch, update_actor, log)``, as replayed CUDA graphs where they apply."""
        if self._graphing():
            return self._graphed_update(batch, update_actor, log)
        return self.update(batch, update_actor, log)

    def optimizer_step_(self, optimizer, loss: Tensor, counted: bool) -> None:
        """zero_grad, backward, step. Through Lightning (precision plugin, strategy, hooks) unless
        direct steps apply; ``counted`` advances ``global_step`` by one."""
        raw = getattr(optimizer, "optimizer", optimizer)
        if self._direct_steps:
            raw.zero_grad(set_to_none=True)
            loss.backward()
            raw.step()
            if counted:
                self._count_training_step()
        elif counted:
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()  # LightningOptimizer.step counts the step
        else:
            raw.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            self.trainer.strategy.optimizer_step(raw, closure=_no_closure, model=self)

    # ----------------------------------------------------------------- internals
    def _graphing(self) -> bool:
        return self._use_cuda_graphs and self.device.type == "cuda"

    def _graphed_update(self, batch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """:meth:`update` as replays of recorded CUDA graphs, one per (update_actor, log). The
        first steps run eagerly on a side stream, as CUDA graph recording requires."""
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
                    f"{type(self).__name__}: cuda_graph=True does not support learning-rate schedules "
                    "(they would be frozen in the graph); set cuda_graph=False or drop the schedule"
                )
            for optimizer in self.trainer.optimizers:  # fused Adam keeps its step count on the device
                for group in optimizer.param_groups:
                    group["capturable"] = True
            inputs = tuple(t.clone() for t in batch)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records without running; the counted step is counted here
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

    def _count_training_step(self) -> None:
        """Advance ``global_step`` as ``LightningOptimizer.step`` does, for a counted step made
        without it (a direct step, a replayed graph)."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def _can_step_directly(self) -> bool:
        """Float32 on a single device, and no hook of the module or of a callback that would
        observe backward or optimizer steps."""
        trainer = self.trainer
        if str(trainer.precision) not in ("32-true", "32") or not isinstance(trainer.strategy, SingleDeviceStrategy):
            return False
        if any(is_overridden(hook, self, L.LightningModule) for hook in _BACKWARD_HOOKS):
            return False
        return not any(
            is_overridden(hook, callback, Callback) for callback in trainer.callbacks for hook in _BACKWARD_HOOKS[1:]
        )


def _no_closure() -> None:
    return None
