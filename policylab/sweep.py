"""Sweeps: methods x datasets x seeds through ``python cli.py fit``, resumable, with one table and
learning curves at the end.

    python -m policylab.sweep --configs configs/td3bc_hopper.yaml configs/iql_hopper.yaml \\
        --datasets hopper-medium-replay-v5 halfcheetah-medium-replay-v5 --seeds 0 1 2 \\
        --max-steps 100000 --out sweeps/mujoco [--set evaluation.every_n_steps=5000 ...] \\
        [--parallel 2] [--cluster slurm --partition gpu]

Methods. A config is a method, named after its file without the task (``a2pr_hopper.yaml`` is
``a2pr``) or as given (``--configs cdsa_td3bc=configs/cdsa_hopper.yaml``). On another task's
dataset a config named after a task runs through that task's config when one lies beside it
(``a2pr_hopper.yaml`` on ``halfcheetah-medium-replay-v5`` runs ``a2pr_halfcheetah.yaml``, the
paper's HalfCheetah values), otherwise as it is with the dataset swapped; the sweep prints which.

Each run is ``python cli.py fit --config C --data.init_args.dataset D --seed_everything S
--trainer.max_steps N`` (plus the ``--set`` values) logging to
``<out>/runs/<method>/<dataset>/seed<S>/`` (TensorBoard events, ``checkpoints/last.ckpt``,
``run.log``). ``--set KEY=VALUE`` is for every run, ``--set METHOD:KEY=VALUE`` for one method's;
a value may name ``{seed}``, ``{dataset}`` and ``{run:METHOD}``, the folder of that method's run on
the same dataset and seed, which then finishes first (CDSA on each TD3+BC run:
``--set cdsa_td3bc:model.init_args.backbone_checkpoint={run:td3bc}/checkpoints/last.ckpt``).
A rerun of the same command skips the runs that finished (``finished.json``, written when
``last.ckpt`` reached ``max_steps``) and resumes the others from ``last.ckpt``
(``--ckpt_path last``); a larger ``--max-steps`` continues finished runs. At the end it writes
``<out>/table.md`` and ``table.csv`` (per method and dataset: seeds, last score, mean of the last 3
evaluations, max, each as mean ± std over seeds, of ``eval/normalized_score``), ``scores.csv``
(every evaluation of every run) and ``curves-<dataset>.png`` (mean and min-max over seeds).

Engine. On one machine (default, ``--cluster none``) runs are children of this process,
``--parallel`` at a time, forked after policylab is imported once (no 5-8 s of imports per run);
on Linux they die with the sweep (``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan
writing into a run folder. On a cluster the same command with ``--cluster slurm`` submits each
run as a SLURM job through submitit (``pip install 'policylab[sweep]'``); ``--cluster local`` uses
submitit's local executor (the same job path, without SLURM). submitit rather than Ray Tune: a
sweep here is a fixed grid of independent, self-checkpointing runs, so no scheduler, search
algorithm, trial actor or object store is needed; submitit is one small pure-Python package that
submits a Python function to SLURM (or runs it locally) with nothing to start on the cluster,
while Ray needs a running Ray cluster, pulls in a large dependency tree, and would wrap runs that
already checkpoint and resume themselves. Every run, in any engine, holds a lock on its folder
(``run.lock``), so two sweeps never train the same run at once.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FINISHED = "finished.json"
TAG = "eval/normalized_score"


TASK_FAMILIES = ("hopper", "halfcheetah", "walker2d", "ant")
_RUN_FOLDER = re.compile(r"\{run:([^{}]+)\}")


@dataclass(frozen=True)
class Run:
    method: str
    config: Path  # the config this run trains with (the task's own where one exists)
    dataset: str
    seed: int
    sets: tuple[str, ...] = ()  # KEY=VALUE, placeholders filled in
    needs: tuple[str, ...] = ()  # methods whose run on the same dataset and seed finishes first

    @property
    def data_label(self) -> str:
        """A dataset id as given (``hopper-medium-replay-v5``), a file by its stem."""
        return Path(self.dataset).stem if ("/" in self.dataset and Path(self.dataset).suffix) else self.dataset

    def folder(self, out: Path) -> Path:
        return run_folder(out, self.method, self.data_label, self.seed)


def run_folder(out: Path, method: str, data_label: str, seed: int) -> Path:
    return out / "runs" / method / data_label.replace("/", "_") / f"seed{seed}"


def task_family(dataset: str) -> str | None:
    """The MuJoCo task of a dataset id or file (``halfcheetah-medium-replay-v5`` -> ``halfcheetah``)."""
    for part in reversed(Path(dataset).with_suffix("").parts if Path(dataset).suffix else dataset.split("/")):
        name = part.split("-")[0].split("_")[0].lower()
        if name in TASK_FAMILIES:
            return name
    return None


def method_name(config: Path) -> str:
    """``a2pr_hopper.yaml`` -> ``a2pr``: the file's stem without a task suffix."""
    stem = config.stem
    for family in TASK_FAMILIES:
        if stem.endswith(f"_{family}"):
            return stem[: -len(family) - 1]
    return stem


def config_for(config: Path, dataset: str) -> Path:
    """The task's own config beside ``config`` (``a2pr_halfcheetah.yaml`` for a HalfCheetah dataset
    and ``a2pr_hopper.yaml``), or ``config`` itself when there is none."""
    family = task_family(dataset)
    name = method_name(config)
    if family is None or name == config.stem:
        return config
    own = config.with_name(f"{name}_{family}{config.suffix}")
    return own if own.is_file() else config


def parse_configs(items: list[str]) -> dict[str, Path]:
    """``--configs`` items (``PATH`` or ``METHOD=PATH``) -> {method: config}."""
    methods: dict[str, Path] = {}
    for item in items:
        name, equals, path = item.partition("=")
        if not equals or "/" in name:  # a path, perhaps with a '=' in it
            name, path = "", item
        config = Path(path)
        if not config.is_file():
            raise ValueError(f"--configs: {path} is not a file")
        name = name or method_name(config)
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"--configs: method name {name!r} may hold letters, digits, '_', '.' and '-' only")
        if name in methods:
            raise ValueError(f"--configs: two configs are method {name!r}; name one: {name}2={path}")
        methods[name] = config
    return methods


def parse_sets(items: list[str], methods: dict[str, Path]) -> list[tuple[str | None, str]]:
    """``--set`` items -> [(method or None for every run, KEY=VALUE)]."""
    sets = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"--set {item}: expected KEY=VALUE, e.g. --set evaluation.every_n_steps=5000")
        method, _, key = key.rpartition(":") if ":" in key else (None, "", key)
        for name in ([method] if method is not None else []) + _RUN_FOLDER.findall(value):
            if name not in methods:
                raise ValueError(f"--set {item}: no method {name!r} in this sweep (its methods: {', '.join(methods)})")
        sets.append((method, f"{key}={value}"))
    return sets


def build_runs(methods: dict[str, Path], datasets: list[str], seeds: list[int], sets, out: Path) -> list[Run]:
    """Every (method, dataset, seed), seed by seed, with its config for the dataset's task and its
    ``--set`` values filled in; runs that others need come first."""
    runs = []
    for seed in seeds:  # seed-major: a long sweep has every method and dataset on one seed first
        for dataset in datasets:
            for method, config in methods.items():
                label = Run(method, config, dataset, seed).data_label
                filled, needs = [], []
                for owner, item in sets:
                    if owner not in (None, method):
                        continue
                    needs += _RUN_FOLDER.findall(item)
                    item = _RUN_FOLDER.sub(
                        lambda m, label=label, seed=seed: str(run_folder(out, m.group(1), label, seed).resolve()), item
                    )
                    filled.append(item.replace("{seed}", str(seed)).replace("{dataset}", dataset))
                if method in needs:
                    raise ValueError(f"--set: method {method} names its own run with {{run:{method}}}")
                runs.append(Run(method, config_for(config, dataset), dataset, seed, tuple(filled), tuple(needs)))
    return _needed_first(runs)


def _needed_first(runs: list[Run]) -> list[Run]:
    """Order runs so that each comes after the runs it needs; a cycle is an error."""
    by_key = {(r.method, r.data_label, r.seed): r for r in runs}
    ordered, placed, visiting = [], set(), set()

    def place(run: Run) -> None:
        key = (run.method, run.data_label, run.seed)
        if key in placed:
            return
        if key in visiting:
            raise ValueError(f"--set: the {{run:...}} values make a cycle through method {run.method}")
        visiting.add(key)
        for method in run.needs:
            place(by_key[(method, run.data_label, run.seed)])
        visiting.discard(key)
        placed.add(key)
        ordered.append(run)

    for run in runs:
        place(run)
    return ordered


def cli_args(run: Run, out: Path, max_steps: int, resume: bool) -> list[str]:
    """The ``python cli.py`` arguments of ``run`` (after ``cli.py``)."""
    folder = run.folder(out)
    args = [
        "fit",
        "--config",
        str(run.config),
        "--data.init_args.dataset",
        run.dataset,
        "--seed_everything",
        str(run.seed),
        "--trainer.max_steps",
        str(max_steps),
        "--trainer.logger.init_args.save_dir",
        str(folder.parents[1]),
        "--trainer.logger.init_args.name",
        folder.parent.name,
        "--trainer.logger.init_args.version",
        folder.name,
        "--trainer.enable_progress_bar",
        "false",
    ]
    for item in run.sets:
        key, _, value = item.partition("=")
        args += [f"--{key.removeprefix('--')}", value]
    return args + (["--ckpt_path", "last"] if resume else [])


def checkpoint_step(folder: Path) -> int:
    """Global step of ``checkpoints/last.ckpt`` (weights-only), 0 without one."""
    path = folder / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return 0
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", 0))


def finished_steps(folder: Path) -> int:
    try:
        return int(json.loads((folder / FINISHED).read_text())["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def finished_folders(out: Path) -> list[Path]:
    """The folders of the runs in sweep folder ``out`` that finished (``finished.json``): the ones
    whose events, config and log are worth keeping (committing, copying) once the sweep stops."""
    return sorted(path.parent for path in Path(out).glob(f"runs/*/*/seed*/{FINISHED}"))


def run_one(folder: str, args: list[str], max_steps: int, threads: int = 1) -> int:
    """Train one run in this process (a forked child or a submitit job): lock its folder, run the
    CLI, and mark it finished when ``last.ckpt`` reached ``max_steps``. Returns the exit status."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "run.lock", "w") as lock:
        for _ in range(600):  # a run killed with its sweep releases the lock when it ends
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.1)
        else:
            print(f"error: {folder} is being trained by another process (run.lock is held)", file=sys.stderr)
            return 75
        import torch

        from policylab.cli import main

        torch.set_num_threads(threads)
        code = 0
        try:
            main(args)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
            if not isinstance(exit.code, (int, type(None))):
                print(exit.code, file=sys.stderr)
        if code == 0:
            step = checkpoint_step(folder)
            if step < max_steps:
                print(f"error: {folder} ended at step {step}, before max_steps {max_steps}", file=sys.stderr)
                return 1
            (folder / FINISHED).write_text(json.dumps({"max_steps": max_steps, "step": step}) + "\n")
        return code


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _fork_run(folder: Path, args: list[str], max_steps: int, threads: int) -> int:
    """Fork a child that runs :func:`run_one` with its output in ``run.log``; returns its pid."""
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _die_with_parent()
        if os.getppid() != parent:
            os._exit(1)
        folder.mkdir(parents=True, exist_ok=True)
        log = os.open(folder / "run.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        import random

        random.seed()
        code = run_one(str(folder), args, max_steps, threads)
    except BaseException:  # noqa: BLE001 - the child reports and leaves with a status
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def plan(runs: list[Run], out: Path, max_steps: int) -> tuple[list[Run], list[tuple[Run, int]]]:
    """(finished runs, [(run to train, step it starts from)])."""
    done, todo = [], []
    for run in runs:
        folder = run.folder(out)
        if finished_steps(folder) >= max_steps:
            done.append(run)
            continue
        step = checkpoint_step(folder)
        if step >= max_steps:  # killed after its last checkpoint, before the mark
            (folder / FINISHED).write_text(json.dumps({"max_steps": max_steps, "step": step}) + "\n")
            done.append(run)
        else:
            todo.append((run, step))
    return done, todo


def _needs_state(run: Run, out: Path, max_steps: int, failed: set[Run], runs: list[Run]) -> str:
    """ "ready" when every run that ``run`` needs has finished, "failed" when one of them failed,
    else "wait"."""
    for method in run.needs:
        need = next(r for r in runs if (r.method, r.data_label, r.seed) == (method, run.data_label, run.seed))
        if need in failed:
            return "failed"
        if finished_steps(need.folder(out)) < max_steps:
            return "wait"
    return "ready"


def take_ready(queue: list, runs: list[Run], out: Path, max_steps: int, failed: set[Run], limit: int | None = None):
    """Remove from ``queue`` and return the ``(run, step)`` entries whose needs have finished (at
    most ``limit``); entries whose needs failed leave the queue into ``failed``."""
    ready = []
    for run, step in list(queue):
        if limit is not None and len(ready) >= limit:
            break
        state = _needs_state(run, out, max_steps, failed, runs)
        if state == "wait":
            continue
        queue.remove((run, step))
        if state == "failed":
            print(f"FAILED {run.folder(out)} (not started: a run it needs failed)", flush=True)
            failed.add(run)
        else:
            ready.append((run, step))
    return ready


def run_local(todo: list[tuple[Run, int]], runs: list[Run], out: Path, max_steps: int, parallel: int, threads: int):
    import policylab.cli  # noqa: F401 - imported once here, before forking

    failed, running, queue = set(), {}, list(todo)
    while queue or running:
        for run, step in take_ready(queue, runs, out, max_steps, failed, limit=parallel - len(running)):
            folder = run.folder(out)
            args = cli_args(run, out, max_steps, resume=step > 0)
            print(f"{'resume' if step else 'start '} {folder} (from step {step})", flush=True)
            running[_fork_run(folder, args, max_steps, threads)] = run
        if not running:  # runs are ordered after what they need, so this is the end of the queue
            assert not queue, f"runs waiting on nothing that runs: {[run.folder(out) for run, _ in queue]}"
            break
        pid, status = os.wait()
        run = running.pop(pid, None)
        if run is not None:
            code = os.waitstatus_to_exitcode(status)
            print(f"{'done  ' if code == 0 else 'FAILED'} {run.folder(out)} (exit {code})", flush=True)
            if code != 0:
                failed.add(run)
    return [run for run in runs if run in failed]


def run_submitit(todo, runs: list[Run], out: Path, max_steps: int, options: argparse.Namespace):
    try:
        import submitit
    except ImportError:
        sys.exit(
            f"error: --cluster {options.cluster} needs submitit: pip install 'policylab[sweep]' "
            "(or run on this machine with --cluster none)"
        )
    executor = submitit.AutoExecutor(folder=out / "submitit", cluster=None if options.cluster == "slurm" else "local")
    params = {"timeout_min": options.timeout_min, "cpus_per_task": options.cpus_per_task, "name": out.name}
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.cluster == "slurm":
        params["slurm_array_parallelism"] = options.parallel
        if options.partition:
            params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    failed, queue = set(), list(todo)
    while queue:  # in waves: the runs whose needs have finished, submitted together
        wave = take_ready(queue, runs, out, max_steps, failed)
        jobs = []
        with executor.batch():
            for run, step in wave:
                args = cli_args(run, out, max_steps, resume=step > 0)
                jobs.append((run, executor.submit(run_one, str(run.folder(out)), args, max_steps, options.threads)))
        for run, job in jobs:
            print(f"submitted {run.folder(out)} as job {job.job_id}", flush=True)
        for run, job in jobs:
            try:
                code = job.result()
            except Exception as err:  # noqa: BLE001 - submitit's job failures: reported, the sweep goes on
                code = f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}"
            print(f"{'done  ' if code == 0 else 'FAILED'} {run.folder(out)} ({code})", flush=True)
            if code != 0:
                failed.add(run)
    return [run for run in runs if run in failed]


# ---------------------------------------------------------------------------------------- results
def scores_of_run(folder: Path, tag: str = TAG) -> dict[int, float]:
    """``{step: value}`` of ``tag`` as TensorBoard shows the run folder: its event files in order,
    with the purge a resumed run writes applied (the interrupted run's later points dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not folder.is_dir():  # not started yet
        return {}
    from tensorboard.util import tb_logging

    tb_logging.get_logger().setLevel("ERROR")  # each resume's purge is expected, not worth a warning
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)} if tag in acc.Tags()["scalars"] else {}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def results(runs: list[Run], out: Path, max_steps: int) -> list[dict]:
    """One row per (method, dataset): each statistic's mean and std over the seeds that finished
    (a sweep still running, or stopped, counts only those)."""
    groups: dict[tuple[str, str], list[dict[int, float]]] = {}
    for run in runs:
        finished = finished_steps(run.folder(out)) >= max_steps
        scores = {s: v for s, v in scores_of_run(run.folder(out)).items() if s <= max_steps} if finished else {}
        groups.setdefault((run.method, run.data_label), [])
        if scores:
            groups[(run.method, run.data_label)].append(scores)
    rows = []
    for (method, dataset), per_seed in groups.items():
        row = {"method": method, "dataset": dataset, "seeds": len(per_seed)}
        stats = {
            "last": [s[max(s)] for s in per_seed],
            "last3": [sum(s[k] for k in sorted(s)[-3:]) / len(sorted(s)[-3:]) for s in per_seed],
            "max": [max(s.values()) for s in per_seed],
        }
        for name, values in stats.items():
            mean, std = _mean_std(values) if values else (float("nan"), float("nan"))
            row[f"{name}_mean"], row[f"{name}_std"] = mean, std
        rows.append(row)
    return rows


def write_results(runs: list[Run], out: Path, max_steps: int) -> str:
    rows = results(runs, out, max_steps)
    with open(out / "table.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "scores.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["method", "dataset", "seed", "step", "normalized_score"])
        for run in runs:
            for step, value in sorted(scores_of_run(run.folder(out)).items()):
                writer.writerow([run.method, run.data_label, run.seed, step, repr(value)])
    lines = [
        f"Normalized score (`{TAG}`) at {max_steps} steps, mean ± std over the seeds that finished.",
        "",
        "| method | dataset | seeds | last | mean of last 3 evals | max |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row[f'{k}_mean']:.1f} ± {row[f'{k}_std']:.1f}" if row["seeds"] else "-" for k in ("last", "last3", "max")
        ]
        lines.append(f"| {row['method']} | {row['dataset']} | {row['seeds']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


def write_curves(runs: list[Run], out: Path, max_steps: int) -> list[Path]:
    """One PNG per dataset: each method's mean over its finished seeds and the min-max band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: no learning-curve plots: matplotlib is not installed (pip install 'policylab[sweep]')")
        return []
    written = []
    for dataset in dict.fromkeys(run.data_label for run in runs):
        fig, ax = plt.subplots(figsize=(6, 4))
        plotted = False
        for method in dict.fromkeys(run.method for run in runs):
            per_seed = [
                scores_of_run(r.folder(out))
                for r in runs
                if r.method == method and r.data_label == dataset and finished_steps(r.folder(out)) >= max_steps
            ]
            per_seed = [s for s in per_seed if s]
            if not per_seed:
                continue
            plotted = True
            steps = sorted(set.intersection(*(set(s) for s in per_seed)))
            values = [[s[k] for s in per_seed] for k in steps]
            mean = [sum(v) / len(v) for v in values]
            (line,) = ax.plot(steps, mean, label=f"{method} ({len(per_seed)} seeds)")
            ax.fill_between(
                steps, [min(v) for v in values], [max(v) for v in values], alpha=0.2, color=line.get_color()
            )
        if not plotted:  # no finished run on this dataset yet
            plt.close(fig)
            continue
        ax.set(xlabel="gradient step", ylabel="normalized score", title=dataset)
        ax.legend()
        fig.tight_layout()
        path = out / f"curves-{dataset.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m policylab.sweep", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument(
        "--configs", nargs="+", required=True, metavar="[METHOD=]CONFIG", help="config files, each a method"
    )
    parser.add_argument("--datasets", nargs="+", required=True, help="dataset ids or files (data.init_args.dataset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, required=True, help="gradient steps of every run")
    parser.add_argument("--out", required=True, help="the sweep folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[METHOD:]KEY=VALUE",
        help="a CLI value for every run, or for one method's",
    )
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (SLURM: array parallelism)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--cluster", choices=("none", "local", "slurm"), default="none")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--timeout-min", type=int, default=24 * 60, help="submitit job time limit")
    parser.add_argument("--cpus-per-task", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--table-only", action="store_true", help="write the table and plots of what exists")
    options = parser.parse_args(argv)
    out = Path(options.out)
    try:
        methods = parse_configs(options.configs)
        sets = parse_sets(options.set, methods)
        runs = build_runs(methods, options.datasets, options.seeds, sets, out)
    except ValueError as err:
        parser.error(str(err))
    if len({r.folder(out) for r in runs}) < len(runs):
        parser.error("two datasets share a name: their runs would share a folder")
    for method, config in methods.items():
        for dataset in options.datasets:
            own = config_for(config, dataset)
            print(f"{method} on {Run(method, own, dataset, 0).data_label}: {own}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    if not options.table_only:
        done, todo = plan(runs, out, options.max_steps)
        for run in done:
            print(f"skip   {run.folder(out)} (finished)", flush=True)
        if options.cluster == "none":
            failed = run_local(todo, runs, out, options.max_steps, options.parallel, options.threads)
        else:
            failed = run_submitit(todo, runs, out, options.max_steps, options)
    print(write_results(runs, out, options.max_steps), end="")
    for path in write_curves(runs, out, options.max_steps):
        print(f"wrote {path}")
    if failed:
        sys.exit(
            f"error: {len(failed)} run(s) failed; see run.log in: " + ", ".join(str(r.folder(out)) for r in failed)
        )


if __name__ == "__main__":
    main()
