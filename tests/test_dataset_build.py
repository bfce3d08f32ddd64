"""The SAC dataset builder end to end on a tiny budget: every kind, both formats, resume, bad files."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_python, start_python

from policylab.datamodules import DatasetError, OfflineTransitionDataModule, read_d4rl_hdf5
from policylab.datasets.build import KINDS, BuildConfig, build, dataset_statistics, export_bundle

TINY = dict(
    sac_steps=900,
    random_steps=300,
    eval_every=300,
    eval_episodes=2,
    pick_episodes=2,
    medium_range=(-100.0, 1000.0),
    expert_min_score=-100.0,
    rollout_steps=800,
)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    config = BuildConfig(work_dir=str(root / "work"), out_dir=str(root / "out"), minari=True, **TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        stats = build(config, progress=False, log=lambda *_: None)
        yield config, stats, root


def test_every_kind_is_written_with_d4rl_keys(tiny_build):
    config, stats, _ = tiny_build
    assert set(stats) == set(KINDS)
    for kind in KINDS:
        arrays, attrs = read_d4rl_hdf5(config.dataset_path(kind))
        assert {
            "observations",
            "actions",
            "rewards",
            "terminals",
            "timeouts",
            "next_observations",
            "infos/qpos",
            "infos/qvel",
        } <= set(arrays)
        assert attrs["env_id"] == "Hopper-v5" and attrs["ref_max_score"] == pytest.approx(3234.3)
        assert arrays["infos/qpos"].shape[1] == 6 and arrays["observations"].shape[1] == 11
        # the recorded state is the state the observation was taken in: obs = (qpos[1:], clip(qvel))
        np.testing.assert_allclose(arrays["observations"][:, :5], arrays["infos/qpos"][:, 1:], atol=1e-5)


def test_medium_replay_is_the_sac_buffer_up_to_the_medium_policy(tiny_build):
    config, stats, _ = tiny_build
    picked = json.loads((Path(config.work_dir) / "picked.json").read_text())
    arrays, _ = read_d4rl_hdf5(config.dataset_path("medium-replay"))
    assert len(arrays["rewards"]) == picked["medium"]["env_steps"] == TINY["random_steps"] + picked["medium"]["step"]
    assert arrays["terminals"][-1] or arrays["timeouts"][-1]  # the cut episode is closed
    medium_expert, _ = read_d4rl_hdf5(config.dataset_path("medium-expert"))
    assert len(medium_expert["rewards"]) == 2 * TINY["rollout_steps"]


def test_hdf5_and_minari_give_identical_transitions(tiny_build):
    config, _, root = tiny_build
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        for kind in ("medium-replay", "medium"):
            from_hdf5 = OfflineTransitionDataModule(str(config.dataset_path(kind))).load()
            from_minari = OfflineTransitionDataModule(config.minari_id(kind)).load()
            assert len(from_hdf5.buffer) > 0
            torch.testing.assert_close(from_minari.buffer.data, from_hdf5.buffer.data, rtol=0, atol=0)
            assert from_minari.env_id == from_hdf5.env_id == "Hopper-v5"
            assert from_minari.reference_scores == pytest.approx(from_hdf5.reference_scores)


def test_statistics_and_bundle_card(tiny_build, tmp_path):
    config, stats, _ = tiny_build
    arrays, _ = read_d4rl_hdf5(config.dataset_path("medium"))
    s = dataset_statistics(arrays, "Hopper-v5")
    ends = int(arrays["terminals"].sum() + arrays["timeouts"].sum())
    assert s["episodes"] in (ends, ends + 1) and s["transitions"] == TINY["rollout_steps"]
    assert s["return_min"] <= s["return_mean"] <= s["return_max"]
    assert s["normalized_score_mean"] == pytest.approx(100 * (s["return_mean"] + 20.272305) / (3234.3 + 20.272305))

    bundle = export_bundle(config, tmp_path / "bundle")
    card = (bundle / "README.md").read_text()
    assert "hopper_medium_replay-v5.hdf5" in card and f"{stats['medium-replay']['transitions']} |" in card
    policy = torch.load(bundle / "medium_policy.pt", weights_only=True)
    assert {"actor", "actor_config", "step", "env_steps", "score"} <= set(policy)

    # over the size limit: shipped without infos/*, and if still over, not shipped but named with its build
    whole = bundle / "hopper_medium_replay-v5.hdf5"
    slim = export_bundle(config, tmp_path / "slim", max_bytes=whole.stat().st_size - 1)
    arrays, attrs = read_d4rl_hdf5(slim / whole.name)
    built, built_attrs = read_d4rl_hdf5(whole)
    assert set(arrays) == {k for k in built if not k.startswith("infos/")} and any(
        k.startswith("infos/") for k in built
    )
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], built[key])
    assert attrs == built_attrs
    assert "shipped without `infos/qpos` and `infos/qvel` to stay" in (slim / "README.md").read_text()
    slimmer = export_bundle(config, tmp_path / "slimmer", max_bytes=(slim / whole.name).stat().st_size - 1)
    arrays, _ = read_d4rl_hdf5(slimmer / whole.name)
    assert set(arrays) == {k for k in built if not k.startswith(("infos/", "next_"))}
    card = (slimmer / "README.md").read_text()
    assert "`infos/qvel` and `next_observations`" in card and "qlearning_dataset" in card
    # it loads by D4RL's rule: s' is the next row; the rows at timeouts and the last one are dropped
    loaded = OfflineTransitionDataModule(str(slimmer / whole.name)).load().buffer.all()
    kept = np.flatnonzero(~built["timeouts"][:-1].astype(bool))
    assert len(loaded.obs) == len(kept) < len(built["observations"])
    none = export_bundle(config, tmp_path / "none", max_bytes=1000)
    assert not (none / whole.name).exists() and (none / "medium_policy.pt").is_file()
    assert "--kinds medium-replay --out $D4RL_DATASET_DIR" in (none / "README.md").read_text()

    # random, medium and medium-expert regenerate from the bundle's policies, identically
    again = BuildConfig(
        out_dir=str(tmp_path / "regen"),
        work_dir=str(tmp_path / "regen_work"),
        policies_from=str(bundle),
        kinds=("random", "medium", "medium-expert"),
        **TINY,
    )
    build(again, progress=False, log=lambda *_: None)
    for kind in ("random", "medium"):
        original, _ = read_d4rl_hdf5(config.dataset_path(kind))
        regenerated, _ = read_d4rl_hdf5(again.dataset_path(kind))
        for key in original:
            np.testing.assert_array_equal(regenerated[key], original[key], err_msg=f"{kind}/{key}")


def test_truncated_and_corrupted_files_give_clear_errors(tiny_build, tmp_path):
    config, _, _ = tiny_build
    data = config.dataset_path("medium").read_bytes()
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"truncated\.hdf5.*(truncated or corrupt)"):
        OfflineTransitionDataModule(str(truncated)).load()
    corrupted = tmp_path / "corrupted.hdf5"
    middle = len(data) // 2
    corrupted.write_bytes(data[:middle] + bytes(4096) + data[middle + 4096 :])
    with pytest.raises(DatasetError, match="corrupted.hdf5"):
        OfflineTransitionDataModule(str(corrupted)).load()


def test_build_refuses_to_resume_with_other_training_settings(tiny_build):
    config, _, _ = tiny_build
    other = BuildConfig(**{**config.__dict__, "seed": 1})
    with pytest.raises(DatasetError, match="seed: 0 -> 1"):
        build(other, progress=False, log=lambda *_: None)


def test_interrupted_build_resumes_without_redoing_finished_parts(tmp_path):
    args = [
        sys.executable,
        "-m",
        "policylab.datasets",
        "build",
        "hopper",
        "--work-dir",
        "work",
        "--out",
        "out",
        "--sac-steps",
        "1200",
        "--random-steps",
        "200",
        "--eval-every",
        "300",
        "--eval-episodes",
        "2",
        "--pick-episodes",
        "2",
        "--medium-range",
        "-100",
        "1000",
        "--rollout-steps",
        "500",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # forked from tests/cli_forkserver.py (no imports to redo), as are the resume and rerun below
    process = start_python(*args[1:], "--kinds", "medium-replay", "medium", cwd=tmp_path, env=env)
    first_snapshot = tmp_path / "work/policies/step_0000600.pt"
    deadline = time.time() + 240
    while not first_snapshot.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    process.kill()
    output = process.result()
    assert first_snapshot.exists(), output.stdout[-3000:] + output.stderr[-3000:]
    assert not list((tmp_path / "out").glob("*.hdf5")) if (tmp_path / "out").exists() else True
    step_300 = tmp_path / "work/policies/step_0000300.pt"
    written_at = step_300.stat().st_mtime_ns
    killed_at = torch.load(tmp_path / "work/sac/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 300 <= killed_at < 1200

    result = run_python(*args[1:], "--kinds", "medium-replay", "medium", cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restored all states from the checkpoint" in result.stdout + result.stderr
    assert step_300.stat().st_mtime_ns == written_at  # the finished part was not redone
    final = torch.load(tmp_path / "work/sac/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == 1200
    interaction = next(v for k, v in final["callbacks"].items() if k.startswith("EnvInteraction"))
    assert interaction["env_steps"] == 200 + 1200  # no env step lost or repeated across the kill
    assert (tmp_path / "out/hopper_medium_replay-v5.hdf5").is_file() and (
        tmp_path / "out/hopper_medium-v5.hdf5"
    ).is_file()
    assert not list((tmp_path / "out").glob(".*.tmp"))
    medium_at = (tmp_path / "out/hopper_medium-v5.hdf5").stat().st_mtime_ns

    # a second rerun finds everything done
    result = run_python(*args[1:], "--kinds", "medium-replay", "medium", cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0 and "exists" in result.stdout
    assert (tmp_path / "out/hopper_medium-v5.hdf5").stat().st_mtime_ns == medium_at


def test_a_minari_dataset_from_another_build_is_not_overwritten(tiny_build):
    from policylab.datasets.build import _write_minari_once

    config, _, root = tiny_build
    arrays, _ = read_d4rl_hdf5(config.dataset_path("medium"))
    shorter = {k: v[:500] for k, v in arrays.items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        with pytest.raises(DatasetError, match="holds 800 steps but the medium set has 500"):
            _write_minari_once(config, "medium", shorter)
        _write_minari_once(config, "medium", arrays)  # the same build: nothing to do


def test_a_portable_build_resumes_elsewhere_from_its_small_checkpoint_and_exports_an_expert(tiny_build, tmp_path):
    import shutil

    from policylab.datasets.build import export_expert

    quiet = dict(progress=False, log=lambda *_: None)
    portable = BuildConfig(
        work_dir=str(tmp_path / "work"),
        out_dir=str(tmp_path / "out"),
        portable=True,
        kinds=(),  # SAC only
        **{**TINY, "sac_steps": 600},
    )
    with pytest.raises(ValueError, match="cannot write medium-replay"):
        build(BuildConfig(**{**portable.__dict__, "kinds": ("medium-replay",)}), **quiet)
    build(portable, **quiet)
    state = torch.load(tmp_path / "work/sac/checkpoints/last.ckpt", weights_only=True)
    interaction = next(v for k, v in state["callbacks"].items() if k.startswith("EnvInteraction"))
    assert "appended_rows" not in state["ReplayBufferDataModule"] and "recording" not in interaction
    assert interaction["env_steps"] == 300 + 600

    # carried to another machine: only build.json and the checkpoint travel
    moved = tmp_path / "moved"
    (moved / "sac/checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "work/build.json", moved)
    shutil.copy(tmp_path / "work/sac/checkpoints/last.ckpt", moved / "sac/checkpoints")
    longer = BuildConfig(**{**portable.__dict__, "work_dir": str(moved), "sac_steps": 900, "kinds": ("expert",)})
    build(longer, **quiet)
    state = torch.load(moved / "sac/checkpoints/last.ckpt", weights_only=True)
    interaction = next(v for k, v in state["callbacks"].items() if k.startswith("EnvInteraction"))
    assert state["global_step"] == 900
    assert interaction["env_steps"] == 300 + 600 + 300 + 300  # the refill: max(random_steps, batch size) steps
    expert, attrs = read_d4rl_hdf5(longer.dataset_path("expert"))
    assert attrs["expert_policy_step"] == 900 and len(expert["rewards"]) == TINY["rollout_steps"]
    with pytest.raises(DatasetError, match="holds a portable build"):
        build(BuildConfig(**{**longer.__dict__, "portable": False}), **quiet)

    # a run built with its buffer goes on as portable: its next checkpoint drops the buffer
    switched = tmp_path / "switched"
    (switched / "sac/checkpoints").mkdir(parents=True)
    shutil.copy(Path(tiny_build[0].work_dir) / "build.json", switched)
    shutil.copy(Path(tiny_build[0].work_dir) / "sac/checkpoints/last.ckpt", switched / "sac/checkpoints")
    build(
        BuildConfig(
            **{**tiny_build[0].__dict__, "work_dir": str(switched), "sac_steps": 1200, "kinds": (), "portable": True}
        ),
        **quiet,
    )
    state = torch.load(switched / "sac/checkpoints/last.ckpt", weights_only=True)
    assert state["global_step"] == 1200 and "appended_rows" not in state["ReplayBufferDataModule"]

    # the final policy becomes a bundle's expert (twice: the card keeps one expert section) ...
    bundle = export_bundle(tiny_build[0], tmp_path / "bundle")
    export_expert(longer, bundle)
    from policylab.datasets.__main__ import main

    main(["export", "hopper", "--work-dir", str(moved), "--expert", "--to", str(bundle), "--note", "Carried once."])
    with pytest.raises(DatasetError, match=r"SAC step 900\) scores -?[0-9.]+, below the expert level 1000000000.0"):
        export_expert(BuildConfig(**{**longer.__dict__, "expert_min_score": 1e9}), bundle)
    card = (bundle / "README.md").read_text()
    assert card.count("## Expert policy") == 1 and "SAC step 900" in card and "--portable" in card
    assert card.rstrip().endswith("Carried once.")
    assert card.index("## Datasets") < card.index("## Expert policy")
    # ... and expert and medium-expert regenerate from the bundle, the same steps as the run's own
    regen = BuildConfig(
        work_dir=str(tmp_path / "regen_work"),
        out_dir=str(tmp_path / "regen"),
        policies_from=str(bundle),
        kinds=("expert", "medium-expert"),
        **TINY,
    )
    build(regen, **quiet)
    again, attrs = read_d4rl_hdf5(regen.dataset_path("expert"))
    assert attrs["expert_policy_step"] == 900
    for key in expert:
        np.testing.assert_array_equal(again[key], expert[key], err_msg=key)
    medium_expert, _ = read_d4rl_hdf5(regen.dataset_path("medium-expert"))
    np.testing.assert_array_equal(medium_expert["actions"][TINY["rollout_steps"] :], expert["actions"])
