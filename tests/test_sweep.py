"""``python -m policylab.sweep``: a tiny sweep run to its end, and the same sweep killed in the
middle and rerun (finished runs skipped, the interrupted one resumed, the same table)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_python, start_python

CONFIGS = [str(ROOT / "configs/td3bc_hopper.yaml"), str(ROOT / "configs/iql_hopper.yaml")]
STEPS = 60


def _sweep(hopper_hdf5: Path, out: Path) -> list[str]:
    return [
        "-m",
        "policylab.sweep",
        "--configs",
        *CONFIGS,
        "--datasets",
        str(hopper_hdf5),
        "--seeds",
        "0",
        "1",
        "--max-steps",
        str(STEPS),
        "--out",
        str(out),
        "--set",
        "evaluation.every_n_steps=20",
        "--set",
        "evaluation.n_episodes=1",
        "--set",
        "trainer.log_every_n_steps=20",
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _rows(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_sweep_table_and_resume_after_kill(tmp_path, hopper_hdf5):
    # 1. Uninterrupted: 2 configs x 1 dataset x 2 seeds, to the end.
    whole = tmp_path / "whole"
    result = run_python(*_sweep(hopper_hdf5, whole), cwd=tmp_path, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = _rows(whole / "table.csv")
    assert [(r["method"], r["dataset"], r["seeds"]) for r in rows] == [
        ("td3bc", "hopper_random-v5", "2"),
        ("iql", "hopper_random-v5", "2"),
    ]
    scores = _rows(whole / "scores.csv")
    assert sorted({int(r["step"]) for r in scores}) == [20, 40, 60] and len(scores) == 4 * 3
    # the table's statistics, recomputed here from every evaluation of every run
    for row in rows:
        per_seed = {}
        for r in scores:
            if r["method"] == row["method"]:
                per_seed.setdefault(r["seed"], {})[int(r["step"])] = float(r["normalized_score"])
        last = torch.tensor([s[60] for s in per_seed.values()], dtype=torch.float64)
        last3 = torch.tensor([(s[20] + s[40] + s[60]) / 3 for s in per_seed.values()], dtype=torch.float64)
        best = torch.tensor([max(s.values()) for s in per_seed.values()], dtype=torch.float64)
        for name, values in (("last", last), ("last3", last3), ("max", best)):
            assert float(row[f"{name}_mean"]) == pytest.approx(values.mean().item(), rel=1e-9)
            assert float(row[f"{name}_std"]) == pytest.approx(values.std(unbiased=False).item(), rel=1e-9, abs=1e-12)
    assert "| td3bc | hopper_random-v5 | 2 |" in (whole / "table.md").read_text()
    if importlib.util.find_spec("matplotlib") is not None:  # the optional extra 'sweep'
        assert (whole / "curves-hopper_random-v5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # 2. The same sweep, killed (SIGKILL) after its first run finished, while the second runs and
    # has a checkpoint before max_steps (seed by seed: TD3+BC and IQL on seed 0, then seed 1).
    cut = tmp_path / "cut"
    first = cut / "runs/td3bc/hopper_random-v5/seed0"
    second = cut / "runs/iql/hopper_random-v5/seed0"
    sweep = start_python(*_sweep(hopper_hdf5, cut), cwd=tmp_path, env=_env())
    deadline = time.time() + 240
    while not (second / "checkpoints/last.ckpt").is_file():
        assert sweep.poll() is None and time.time() < deadline, "the sweep ended before its second run checkpointed"
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait(60)
    sweep.result()
    assert (first / "finished.json").is_file() and not (second / "finished.json").exists()
    killed_at = torch.load(second / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 0 < killed_at < STEPS
    # the table of a stopped sweep counts the runs that finished, and only those
    result = run_python(*_sweep(hopper_hdf5, cut), "--table-only", cwd=tmp_path, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["method"], r["seeds"]) for r in _rows(cut / "table.csv")] == [("td3bc", "1"), ("iql", "0")]
    assert "| iql | hopper_random-v5 | 0 | - | - | - |" in (cut / "table.md").read_text()
    first_files = sorted(p.name for p in first.rglob("*") if p.name not in ("table.csv", "table.md"))
    first_events = {p: p.stat().st_mtime_ns for p in first.glob("events.out.tfevents.*")}

    # 3. Rerun: the first run is skipped, the second resumed from its checkpoint, the rest trained.
    result = run_python(*_sweep(hopper_hdf5, cut), cwd=tmp_path, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"skip   {first} (finished)" in result.stdout
    assert f"resume {second} (from step {killed_at})" in result.stdout
    assert "config-resume-1.yaml" in {p.name for p in second.iterdir()}
    assert sorted(p.name for p in first.rglob("*")) == first_files
    assert {p: p.stat().st_mtime_ns for p in first.glob("events.out.tfevents.*")} == first_events
    # same seeds, same scores: every evaluation, and so the table, as in the uninterrupted sweep
    assert (cut / "scores.csv").read_text() == (whole / "scores.csv").read_text()
    assert (cut / "table.csv").read_text() == (whole / "table.csv").read_text()
    assert (cut / "table.md").read_text() == (whole / "table.md").read_text()


def test_sweep_refuses_bad_arguments(tmp_path):
    result = run_python(
        "-m", "policylab.sweep", "--configs", "nope.yaml", "--datasets", "x", "--max-steps", "1", "--out", "o",
        cwd=tmp_path, env=_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "nope.yaml is not a file" in result.stderr
    config = str(ROOT / "configs/td3bc_hopper.yaml")
    result = run_python(
        "-m", "policylab.sweep", "--configs", config, "--datasets", "x", "--max-steps", "1", "--out", "o",
        "--set", "evaluation.every_n_steps", cwd=tmp_path, env=_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "expected KEY=VALUE" in result.stderr


def test_run_scores_is_the_sweep():
    spec = importlib.util.spec_from_file_location("run_scores", ROOT / "benchmarks/run_scores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--configs", "td3bc_hopper", "--seeds", "0", "1", "--steps", "500", "--out", "o"]
    argv += ["--", "--evaluation.every_n_steps", "100", "--trainer.log_every_n_steps=50"]
    assert module.sweep_args(argv) == [
        "--configs", str(ROOT / "configs/td3bc_hopper.yaml"), "--datasets", "hopper-medium-replay-v5",
        "--seeds", "0", "1", "--max-steps", "500", "--parallel", "2", "--out", "o",
        "--set", "evaluation.every_n_steps=100", "--set", "trainer.log_every_n_steps=50",
    ]  # fmt: skip


def test_methods_take_their_task_config_and_their_own_values():
    from policylab.sweep import build_runs, parse_configs, parse_sets

    configs = ROOT / "configs"
    methods = parse_configs(
        [
            str(configs / "a2pr_hopper.yaml"),
            str(configs / "td3bc_hopper.yaml"),
            f"cdsa_td3bc={configs / 'cdsa_hopper.yaml'}",
        ]
    )
    assert list(methods) == ["a2pr", "td3bc", "cdsa_td3bc"]
    sets = parse_sets(
        [
            "evaluation.n_episodes=5",
            "cdsa_td3bc:model.init_args.backbone_checkpoint={run:td3bc}/checkpoints/last.ckpt",
            "cdsa_td3bc:trainer.default_root_dir=x/{dataset}/{seed}",
        ],
        methods,
    )
    datasets = ["halfcheetah-medium-replay-v5", "walker2d-medium-replay-v5"]
    out = Path("/sweep")
    runs = build_runs(methods, datasets, [0, 1], sets, out)
    config_of = {(r.method, r.dataset): r.config.name for r in runs}
    assert config_of[("a2pr", "halfcheetah-medium-replay-v5")] == "a2pr_halfcheetah.yaml"  # the task's own
    assert config_of[("a2pr", "walker2d-medium-replay-v5")] == "a2pr_walker2d.yaml"
    assert config_of[("td3bc", "walker2d-medium-replay-v5")] == "td3bc_hopper.yaml"  # none: the dataset swapped
    cdsa = next(r for r in runs if r.method == "cdsa_td3bc" and r.dataset == datasets[1] and r.seed == 1)
    assert cdsa.needs == ("td3bc",)
    assert cdsa.sets == (
        "evaluation.n_episodes=5",
        f"model.init_args.backbone_checkpoint={out.resolve()}/runs/td3bc/{datasets[1]}/seed1/checkpoints/last.ckpt",
        f"trainer.default_root_dir=x/{datasets[1]}/1",
    )
    assert next(r for r in runs if r.method == "td3bc").sets == ("evaluation.n_episodes=5",)
    order = [(r.method, r.dataset, r.seed) for r in runs]
    for r in runs:
        for need in r.needs:
            assert order.index((need, r.dataset, r.seed)) < order.index((r.method, r.dataset, r.seed))

    for bad, message in [
        (["nope:x=1"], "no method 'nope'"),
        (["x={run:iql}"], "no method 'iql'"),
        (["x"], "expected KEY=VALUE"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_sets(bad, methods)
    with pytest.raises(ValueError, match="names its own run"):
        build_runs(methods, datasets, [0], parse_sets(["td3bc:x={run:td3bc}"], methods), out)
    with pytest.raises(ValueError, match="cycle"):
        build_runs(methods, datasets, [0], parse_sets(["td3bc:x={run:a2pr}", "a2pr:y={run:td3bc}"], methods), out)
    with pytest.raises(ValueError, match="two configs are method 'td3bc'"):
        parse_configs([str(configs / "td3bc_hopper.yaml"), f"td3bc={configs / 'iql_hopper.yaml'}"])


def test_a_run_starts_after_the_runs_it_needs_and_not_after_a_failed_one(tmp_path, monkeypatch):
    """The local engine with a stand-in for training: a child that marks its run finished, or fails
    (seed 1's TD3+BC); CDSA on seed 0 starts only after TD3+BC seed 0 finished, on seed 1 never."""
    from policylab import sweep

    log = tmp_path / "order.log"

    def fake_fork(folder, args, max_steps, threads):
        pid = os.fork()
        if pid:
            return pid
        time.sleep(0.2)
        fails = folder.parts[-3] == "td3bc" and folder.name == "seed1"
        if not fails:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / sweep.FINISHED).write_text('{"max_steps": 5}\n')
        with open(log, "a") as file:
            file.write(f"{folder.parts[-3]} {folder.name} {'failed' if fails else 'done'}\n")
        os._exit(1 if fails else 0)

    monkeypatch.setattr(sweep, "_fork_run", fake_fork)
    configs = ROOT / "configs"
    methods = sweep.parse_configs([f"cdsa={configs / 'cdsa_hopper.yaml'}", str(configs / "td3bc_hopper.yaml")])
    sets = sweep.parse_sets(["cdsa:model.init_args.backbone_checkpoint={run:td3bc}/checkpoints/last.ckpt"], methods)
    runs = sweep.build_runs(methods, ["hopper-medium-replay-v5"], [0, 1], sets, tmp_path)
    _, todo = sweep.plan(runs, tmp_path, 5)
    failed = sweep.run_local(todo, runs, tmp_path, 5, parallel=2, threads=1)
    assert {(r.method, r.seed) for r in failed} == {("td3bc", 1), ("cdsa", 1)}
    lines = log.read_text().splitlines()
    assert "cdsa seed1 done" not in lines and "cdsa seed1 failed" not in lines
    assert lines.index("td3bc seed0 done") < lines.index("cdsa seed0 done")


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_table_wires_cdsa_to_its_backbones_and_online_curves_move_the_switch(tmp_path):
    from policylab.sweep import build_runs, parse_configs, parse_sets

    table = _benchmark("offline_table")
    args = table.sweep_args(table.argparse.Namespace(**{
        "methods": table.DEFAULT_METHODS, "datasets": table.DATASETS, "seeds": [0], "max_steps": 100_000,
        "out": tmp_path, "parallel": 1,
    }))  # fmt: skip
    configs = args[args.index("--configs") + 1 : args.index("--datasets")]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    methods = parse_configs(configs)
    assert list(methods) == ["td3bc", "cdsa_td3bc", "iql", "cdsa_iql", "famo2o", "prdc", "a2pr"]  # no RO2O on a CPU
    runs = build_runs(methods, table.DATASETS, [0], parse_sets(sets, methods), tmp_path)
    cdsa = {r.method: r for r in runs if r.dataset == "walker2d-medium-replay-v5" and r.method.startswith("cdsa")}
    for method, backbone in (("cdsa_td3bc", "td3bc"), ("cdsa_iql", "iql")):
        assert cdsa[method].needs == (backbone,)
        assert f"{tmp_path.resolve()}/runs/{backbone}/walker2d-medium-replay-v5/seed0/checkpoints/last.ckpt" in (
            " ".join(cdsa[method].sets)
        )
    assert all("video.every_n_steps=0" in r.sets for r in runs)
    with pytest.raises(SystemExit, match="needs its backbone td3bc"):
        table.sweep_args(table.argparse.Namespace(**{
            "methods": ["cdsa_td3bc"], "datasets": table.DATASETS, "seeds": [0], "max_steps": 1, "out": tmp_path,
            "parallel": 1,
        }))  # fmt: skip

    curves = _benchmark("online_curves")
    args = curves.sweep_args(curves.argparse.Namespace(**{
        "methods": ["iql", "famo2o"], "dataset": "hopper-medium-replay-v5", "seeds": [0, 1], "offline_steps": 30_000,
        "online_steps": 25_000, "out": tmp_path, "parallel": 2, "set": [],
    }))  # fmt: skip
    assert args[args.index("--max-steps") + 1] == "55000"
    assert "trainer.callbacks.init_args.start_step=30000" in args
    scores = tmp_path / "scores.csv"
    scores.write_text(
        "method,dataset,seed,step,normalized_score\n"
        + "".join(
            f"iql,h,0,{s},{v}\n" for s, v in [(25000, 11.0), (30000, 12.0), (35000, 3.0), (40000, 9.0), (55000, 20.0)]
        )
    )
    assert "| iql | 0 | 12.0 | 3.0 | 20.0 | 55000 |" in curves.online_summary(scores, 30_000)


def test_online_curves_start_from_the_finished_offline_runs_of_another_sweep(tmp_path, capsys):
    from policylab.sweep import FINISHED, run_folder

    curves = _benchmark("online_curves")
    offline, online = tmp_path / "offline", tmp_path / "online"
    for method, steps in (("iql", 100), ("famo2o", 60)):  # famo2o's offline run stopped early
        folder = run_folder(offline, method, "hopper-medium-replay-v5", 0)
        (folder / "checkpoints").mkdir(parents=True)
        torch.save({"global_step": steps}, folder / "checkpoints/last.ckpt")
        (folder / "events.out.tfevents.1.vm.1.0").write_bytes(b"offline curve")
        (folder / FINISHED).write_text(json.dumps({"max_steps": 100, "step": steps}))
    options = curves.argparse.Namespace(
        methods=["iql", "famo2o", "a2pr"], seeds=[0], dataset="hopper-medium-replay-v5", offline_steps=100,
        from_sweep=offline, out=online,
    )  # fmt: skip
    curves.start_from_offline_runs(options)
    started = run_folder(online, "iql", "hopper-medium-replay-v5", 0)
    assert torch.load(started / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 100
    assert (started / "events.out.tfevents.1.vm.1.0").read_bytes() == b"offline curve"
    assert not run_folder(online, "famo2o", "hopper-medium-replay-v5", 0).exists()
    assert not run_folder(online, "a2pr", "hopper-medium-replay-v5", 0).exists()
    said = capsys.readouterr().out
    assert said.count("offline phase to train") == 2 and "offline phase from" in said
    torch.save({"global_step": 110}, started / "checkpoints/last.ckpt")  # the online run went on: never overwritten
    curves.start_from_offline_runs(options)
    assert torch.load(started / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 110
