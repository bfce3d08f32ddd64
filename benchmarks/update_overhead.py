"""Per-step framework overhead of the RL modules: TD3+BC, A2PR and SAC with 16-unit networks, so
that a step is Python, Lightning and optimizer dispatch rather than matmuls. Prints steps/s (the
median of 3 fits of 1500 steps after a 200-step warm-up), one line per run.

Compare two checkouts by alternating runs of this script, each importing its own policylab:

    for i in 1 2 3 4; do for tree in /path/old /path/new; do
        (cd $tree/benchmarks && PYTHONPATH=$tree OMP_NUM_THREADS=1 python update_overhead.py)
    done; done

(``--hidden-dims`` names are found from each class's signature, so checkouts with other size
argument names work too.)
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline_throughput import make_dataset, time_policylab  # noqa: E402

from policylab.datamodules import OfflineTransitionDataModule  # noqa: E402
from policylab.modules import A2PR, SAC, TD3BC  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16, help="units of every hidden layer")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as folder:
        dm = OfflineTransitionDataModule(str(make_dataset(Path(folder))), batch_size=64)
        dm.load()
    rates = []
    for name, cls in (("td3bc", TD3BC), ("a2pr", A2PR), ("sac", SAC)):
        sizes = {k: (args.width,) for k in inspect.signature(cls.__init__).parameters if k.endswith("hidden_dims")}
        model = cls(dm.obs_dim, dm.action_dim, dm.max_action, **sizes)
        time_policylab(dm, model, 200, torch.device("cpu"))
        steps_per_s = statistics.median(time_policylab(dm, model, args.steps, torch.device("cpu")) for _ in range(3))
        rates.append(f"{name} {steps_per_s:.1f}")
    print(" | ".join(rates))


if __name__ == "__main__":
    main()
