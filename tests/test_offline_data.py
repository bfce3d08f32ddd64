"""The offline datamodule on real files written here: D4RL hdf5, npz, Minari; and broken ones."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from policylab.datamodules import DatasetError, OfflineTransitionDataModule, build_transitions, write_d4rl_hdf5
from policylab.datamodules.minari_source import write_minari


def _toy_arrays():
    """Two episodes: one ends by timeout after 3 steps, one by termination after 2 steps."""
    obs = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    return {
        "observations": obs,
        "actions": np.full((5, 1), 0.5, np.float32),
        "rewards": np.array([1, 2, 3, 4, 5], np.float32),
        "terminals": np.array([0, 0, 0, 0, 1], bool),
        "timeouts": np.array([0, 0, 1, 0, 0], bool),
    }


def test_d4rl_next_observations_rule():
    t = build_transitions(_toy_arrays())
    # rows 0,1 (obs[i+1] is the same episode) and 3 (the last row, 4, has no successor);
    # row 2 is a timeout whose successor starts a new episode: dropped, as D4RL's qlearning_dataset does
    np.testing.assert_array_equal(t["obs"][:, 0], [0, 2, 6])
    np.testing.assert_array_equal(t["next_obs"][:, 0], [2, 4, 8])
    np.testing.assert_array_equal(t["reward"], [1, 2, 4])
    np.testing.assert_array_equal(t["terminal"], [0, 0, 0])


def test_given_next_observations_keep_timeouts_as_non_terminal():
    arrays = _toy_arrays()
    arrays["next_observations"] = arrays["observations"] + 100
    t = build_transitions(arrays)
    assert len(t["obs"]) == 5
    np.testing.assert_array_equal(t["terminal"], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(t["timeout"], [0, 0, 1, 0, 0])  # timeout row kept, bootstraps


def test_missing_timeouts_use_max_episode_steps():
    arrays = _toy_arrays()
    del arrays["timeouts"]
    t = build_transitions(arrays, max_episode_steps=2)
    # episode steps 0,1 | 0,1 | 0 ...: rows 1 and 3 are timeouts -> dropped; row 4 is last -> dropped
    np.testing.assert_array_equal(t["obs"][:, 0], [0, 4])


def test_hdf5_datamodule_normalization_and_sampling(hopper_hdf5, hopper_arrays):
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=64)
    assert (dm.obs_dim, dm.action_dim, dm.max_action, dm.env_id) == (11, 3, 1.0, "Hopper-v5")
    assert dm.reference_scores == (-20.272305, 3234.3)
    mean, std = dm.observation_statistics
    kept = hopper_arrays["observations"][:-1][~hopper_arrays["timeouts"][:-1]]
    np.testing.assert_allclose(mean.numpy(), kept.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), kept.std(0) + 1e-3, rtol=1e-4)
    everything = dm.buffer.all()
    assert abs(everything.obs.mean().item()) < 1e-4
    loader = iter(dm.train_dataloader())
    batch = next(loader)
    assert batch.obs.shape == (64, 11) and batch.action.shape == (64, 3) and batch.reward.shape == (64,)
    assert batch.obs.data_ptr() != next(loader).obs.data_ptr()
    assert np.isclose(dm.episode_returns.sum(), hopper_arrays["rewards"].sum())


def test_sampler_state_resumes_exactly(hopper_hdf5):
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=8, seed=3)
    loader = iter(dm.train_dataloader())
    next(loader)
    state = dm.state_dict()
    expected = next(loader).obs
    dm2 = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=8, seed=99)
    dm2.load_state_dict(state)
    torch.testing.assert_close(next(iter(dm2.train_dataloader())).obs, expected)


def test_reward_options(hopper_hdf5, hopper_arrays):
    plain = OfflineTransitionDataModule(str(hopper_hdf5)).buffer.all().reward
    scaled = OfflineTransitionDataModule(str(hopper_hdf5), reward_scale=2.0, reward_bias=-1.0).buffer.all().reward
    torch.testing.assert_close(scaled, plain * 2 - 1)
    dm = OfflineTransitionDataModule(str(hopper_hdf5), reward_normalization="returns")
    returns = dm.episode_returns
    torch.testing.assert_close(dm.buffer.all().reward, plain / float(returns.max() - returns.min()) * 1000)


def test_npz_and_d4rl_name_lookup(tmp_path, monkeypatch, hopper_arrays, hopper_hdf5):
    arrays = {k: v for k, v in hopper_arrays.items() if "/" not in k and k != "next_observations"}
    np.savez(tmp_path / "hopper_random-v5.npz", **arrays)
    from_npz = OfflineTransitionDataModule(str(tmp_path / "hopper_random-v5.npz")).buffer.all()
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_d4rl_hdf5(tmp_path / "hopper_medium_replay-v2.hdf5", arrays)
    from_name = OfflineTransitionDataModule("hopper-medium-replay-v2")
    assert from_name.env_id == "Hopper-v5"
    torch.testing.assert_close(from_name.buffer.all().obs, from_npz.obs)
    with pytest.raises(FileNotFoundError, match="hopper_medium-v2.hdf5"):
        OfflineTransitionDataModule("hopper-medium-v2").load()


def test_minari_round_trip_equals_hdf5(tmp_path, monkeypatch, hopper_arrays):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_minari("policylab/hopper/test-v0", hopper_arrays, "Hopper-v5", ref_min_score=-20.272305, ref_max_score=3234.3)
    write_d4rl_hdf5(tmp_path / "hopper.hdf5", hopper_arrays, {"env_id": "Hopper-v5"})
    from_minari = OfflineTransitionDataModule("policylab/hopper/test-v0")
    from_hdf5 = OfflineTransitionDataModule(str(tmp_path / "hopper.hdf5"))
    assert from_minari.env_id == "Hopper-v5" and from_minari.reference_scores == (-20.272305, 3234.3)
    a, b = from_minari.buffer.all(), from_hdf5.buffer.all()
    for field in a._fields:
        torch.testing.assert_close(getattr(a, field), getattr(b, field), msg=field)


def test_unknown_minari_id_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="'mujoco/hopper/nonexistent-v0' is not on disk.*download=True"):
        OfflineTransitionDataModule("mujoco/hopper/nonexistent-v0").load()


# ------------------------------------------------------------------ bad input
def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.hdf5"
    with pytest.raises(FileNotFoundError, match=str(path)):
        OfflineTransitionDataModule(str(path)).load()


def _write_raw_hdf5(path: Path, arrays: dict) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
    return path


def test_hdf5_missing_required_key(tmp_path):
    arrays = _toy_arrays()
    del arrays["rewards"]
    path = _write_raw_hdf5(tmp_path / "x.hdf5", arrays)
    with pytest.raises(DatasetError, match=r"x.hdf5 lacks the required key\(s\) \['rewards'\]"):
        OfflineTransitionDataModule(str(path)).load()


def test_mismatched_lengths(tmp_path):
    arrays = _toy_arrays()
    arrays["actions"] = arrays["actions"][:3]
    path = _write_raw_hdf5(tmp_path / "x.hdf5", arrays)
    with pytest.raises(DatasetError, match="'actions' has 3 rows but 'observations' has 5"):
        OfflineTransitionDataModule(str(path)).load()


@pytest.mark.parametrize("key,value", [("observations", np.nan), ("rewards", np.inf)])
def test_nan_or_inf_is_named_with_row(tmp_path, key, value):
    arrays = _toy_arrays()
    arrays[key] = arrays[key].copy()
    arrays[key][3] = value
    path = _write_raw_hdf5(tmp_path / "x.hdf5", arrays)
    with pytest.raises(DatasetError, match=f"'{key}' holds NaN or inf .*first at row 3"):
        OfflineTransitionDataModule(str(path)).load()


def test_truncated_hdf5(tmp_path, hopper_hdf5):
    data = hopper_hdf5.read_bytes()
    path = tmp_path / "cut.hdf5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.hdf5.*truncated or corrupt"):
        OfflineTransitionDataModule(str(path)).load()


def test_pickled_npz_is_refused(tmp_path):
    arrays = _toy_arrays()
    arrays["observations"] = np.array([object()] * 5, dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(DatasetError, match="evil.npz holds pickled Python objects"):
        OfflineTransitionDataModule(str(tmp_path / "evil.npz")).load()


def test_write_is_atomic(tmp_path):
    bad = {"observations": np.zeros((3, 2)), "actions": np.array([object()], dtype=object)}
    with pytest.raises(TypeError):
        write_d4rl_hdf5(tmp_path / "out.hdf5", bad)
    assert list(tmp_path.iterdir()) == []


def test_unrecognised_dataset_string():
    with pytest.raises(DatasetError, match="cannot tell what dataset 'hopper' is"):
        OfflineTransitionDataModule("hopper").load()
