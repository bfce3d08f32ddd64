"""Gradient steps per second of TD3+BC, A2PR, IQL and SAC: policylab's modules through
``Trainer.fit`` against plain PyTorch loops of the same updates, in one process, same data, batch
size and thread count, alternating rounds.

    python benchmarks/offline_throughput.py [--methods td3bc a2pr iql sac] [--steps 2000] [--rounds 3] \
        [--threads 2] [--device cpu]
    python benchmarks/offline_throughput.py --device cuda --cuda-graph --methods td3bc a2pr sac
    python benchmarks/offline_throughput.py --profile [--methods ...]     # where policylab's step time goes
    python benchmarks/offline_throughput.py --ceiling [--methods ...]     # the most that the update's matmuls allow

The plain loops (``plain_references.py``) are written the way single-file implementations write
them (CORL, the A2PR authors' code, CleanRL). Both sides train from the same Hopper-sized buffer
(SAC's env interaction is left out of both: this measures the update). For each method the script
also prints the matmul FLOPs of one update (counted with ``torch.utils.flop_counter`` on the
plain loop) and the fraction of the machine's measured matmul rate that the update reaches.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from plain_references import PLAIN
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from policylab.datamodules import OfflineTransitionDataModule
from policylab.modules import A2PR, IQL, SAC, TD3BC

OBS_DIM, ACT_DIM, N = 11, 3, 200_000  # Hopper-sized


def make_dataset(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "bench.npz"
    np.savez(
        path,
        observations=rng.normal(size=(N, OBS_DIM)).astype(np.float32),
        next_observations=rng.normal(size=(N, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(N, ACT_DIM)).astype(np.float32),
        rewards=rng.normal(size=N).astype(np.float32),
        terminals=rng.random(N) < 0.01,
        timeouts=np.zeros(N, bool),
    )
    return path


# ----------------------------------------------------------------------------- timing
POLICYLAB = {
    "td3bc": lambda **kw: TD3BC(OBS_DIM, ACT_DIM, 1.0, **kw),
    "a2pr": lambda **kw: A2PR(OBS_DIM, ACT_DIM, 1.0, mask=0.4, discount=0.995, **kw),
    "iql": lambda **kw: IQL(OBS_DIM, ACT_DIM, 1.0, **kw),
    "sac": lambda **kw: SAC(OBS_DIM, ACT_DIM, 1.0, **kw),
}


def matmul_rate(device, seconds: float = 1.0) -> float:
    """Best FLOP/s of float32 matmuls shaped like these networks' layers (batch 256)."""
    best = 0.0
    for m, k, n in ((256, 256, 256), (256, 256, 512), (256, 750, 750), (512, 256, 256)):
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        for _ in range(10):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 4:
            for _ in range(20):
                a @ b
            count += 20
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - start))
    return best


def update_flops(agent) -> float:
    """Matmul FLOPs of one update, averaged over two steps (delayed actor updates)."""
    with FlopCounterMode(display=False) as counter:
        agent.train_step()
        agent.train_step()
    return counter.get_total_flops() / 2


def time_plain(agent, steps: int, device) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        agent.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


class _StepClock(L.Callback):
    """Wall time from the first training batch to the end of fit, so that ``Trainer`` set-up is
    left out of the timed region as the plain loop's set-up is."""

    def __init__(self, device) -> None:
        self.device, self.start, self.stop = device, None, None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = self._now()

    def on_train_end(self, trainer, pl_module) -> None:
        self.stop = self._now()


def time_policylab(dm: OfflineTransitionDataModule, model: L.LightningModule, steps: int, device) -> float:
    clock = _StepClock(device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(model, datamodule=dm)
    return steps / (clock.stop - clock.start)


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_policylab(
    dm: OfflineTransitionDataModule, model: L.LightningModule, steps: int, device, rate: float
) -> None:
    """Print how much of a policylab step the matmuls take and the FLOP rate they run at there,
    from ``torch.profiler`` over ``steps`` steps (the profiler's own overhead included)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True) as prof:
        time_policylab(dm, model, steps, device)
    events = prof.key_averages()

    def own_time(e) -> float:  # the operator's own time where it runs
        return e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total

    total = sum(own_time(e) for e in events)
    matmuls = [e for e in events if e.key in MATMULS]
    matmul_time = sum(own_time(e) for e in matmuls)
    matmul_flops = sum(e.flops for e in matmuls)
    in_loop = matmul_flops / (matmul_time * 1e-6)
    print(
        f"  profile: matmuls take {matmul_time / total:.0%} of the step's operator time, "
        f"at {in_loop / 1e9:.1f} GFLOP/s "
        f"({in_loop / rate:.0%} of the best matmul rate); the other {1 - matmul_time / total:.0%} is elementwise ops, "
        f"optimizer steps and dispatch",
        flush=True,
    )
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
        print(
            f"    {e.key:32s} {e.self_cpu_time_total / steps / 1e3:7.3f} ms/step  ({e.count / steps:.1f} calls)",
            flush=True,
        )


class _MatmulRecorder(TorchDispatchMode):
    """Records each matmul dispatched inside it: the operator, the shapes and strides of its
    tensor arguments, and its other arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.name() in MATMULS:
            self.calls.append(
                (func, [(a.shape, a.stride()) if isinstance(a, torch.Tensor) else a for a in args], kwargs)
            )
        return func(*args, **kwargs)


def _operand(shape, stride, device) -> torch.Tensor:
    """A random tensor with the given shape and strides (a stride of 0 is a broadcast dimension)."""
    return torch.randn(1 + sum((n - 1) * s for n, s in zip(shape, stride)), device=device).as_strided(shape, stride)


def matmul_ceiling(two_steps, device, passes: int = 50) -> float:
    """Updates per second that the matmuls of ``two_steps()`` (two updates: one with and one
    without the delayed actor step) allow on their own: the same operators, shapes and memory
    layouts replayed back to back on random operands, best of 3 timings: an upper bound for any
    implementation that issues these matmuls."""
    recorder = _MatmulRecorder()
    with recorder:
        two_steps()
    calls = [
        (f, [_operand(*a, device) if isinstance(a, tuple) else a for a in args], kw) for f, args, kw in recorder.calls
    ]
    best = float("inf")
    for _ in range(4):  # the first round warms up
        start = time.perf_counter()
        for _ in range(passes):
            for f, args, kw in calls:
                f(*args, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * passes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(PLAIN), choices=list(PLAIN))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="policylab modules with compile=True")
    parser.add_argument("--compile-mode", default=None, help="e.g. reduce-overhead (CUDA graphs) on a GPU")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="policylab modules with cuda_graph=True (whole update as CUDA graphs)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after timing, profile 200 policylab steps: the matmuls' share of the step and their FLOP rate",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="after timing, replay each update's matmuls alone: "
        "the highest fraction of the matmul rate the update could reach",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as folder:
        dm = OfflineTransitionDataModule(str(make_dataset(Path(folder))), batch_size=256)
        dm.load()  # outside the timed region
    data = {k: v.to(device) for k, v in dm.buffer.all()._asdict().items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    rate = matmul_rate(device)
    print(f"{name}, torch {torch.__version__}: best float32 matmul rate {rate / 1e9:.1f} GFLOP/s", flush=True)
    for method in args.methods:
        plain = PLAIN[method](data, OBS_DIM, ACT_DIM, device)
        model = POLICYLAB[method](compile=args.compile, compile_mode=args.compile_mode, cuda_graph=args.cuda_graph)
        flops = update_flops(plain)
        # warm-up both (allocator, first-call overheads, compilation)
        time_plain(plain, 100, device)
        time_policylab(dm, model, 100, device)
        plain_rates, lab_rates = [], []
        for r in range(args.rounds):
            plain_rates.append(time_plain(plain, args.steps, device))
            lab_rates.append(time_policylab(dm, model, args.steps, device))
            print(
                f"{method} round {r}: plain {plain_rates[-1]:.1f} steps/s   policylab {lab_rates[-1]:.1f} steps/s",
                flush=True,
            )
        p, q = statistics.median(plain_rates), statistics.median(lab_rates)
        print(
            f"{method}: {flops / 1e9:.2f} GFLOP/update | "
            f"plain {p:.1f} steps/s ({flops * p / rate:.0%} of matmul rate) | "
            f"policylab {q:.1f} steps/s ({flops * q / rate:.0%}) | policylab/plain = {q / p:.3f}",
            flush=True,
        )
        if args.profile:
            profile_policylab(dm, model, 200, device, rate)
        if args.ceiling:
            plain_ceiling = matmul_ceiling(lambda plain=plain: (plain.train_step(), plain.train_step()), device)
            lab_ceiling = matmul_ceiling(lambda model=model: time_policylab(dm, model, 2, device), device)
            print(
                f"  ceiling: the update's matmuls alone, replayed back to back: plain {plain_ceiling:.1f} steps/s "
                f"({flops * plain_ceiling / rate:.0%} of matmul rate), policylab {lab_ceiling:.1f} steps/s "
                f"({flops * lab_ceiling / rate:.0%}); "
                f"the update reaches {p / plain_ceiling:.0%} and {q / lab_ceiling:.0%} of them",
                flush=True,
            )


if __name__ == "__main__":
    main()
