"""The offline datamodule on real files written here: D4RL hdf5, npz, Minari; and broken ones."""

import logging
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


def test_sampler_state_resumes_at_the_prefetched_batch(hopper_hdf5):
    """Lightning fetches one batch ahead: when the checkpoint of step k is written the sampler has
    drawn batch k + 1, so the saved state is the one from before that draw and a resumed run draws
    batch k + 1 again (end to end with Trainer in tests/test_sweep.py)."""
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=8, seed=3)
    loader = iter(dm.train_dataloader())
    next(loader)  # the batch of step k
    prefetched = next(loader).obs  # drawn ahead while step k is checkpointed
    state = dm.state_dict()
    dm2 = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=8, seed=99)
    dm2.load_state_dict(state)
    torch.testing.assert_close(next(iter(dm2.train_dataloader())).obs, prefetched)


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
    with pytest.raises(FileNotFoundError, match="hopper_medium-v2.hdf5") as missing:
        OfflineTransitionDataModule("hopper-medium-v2").load()
    assert "policylab's SAC builds it" not in str(missing.value)  # D4RL's own data
    # policylab's own -v5 sets that are not shipped: the error points to the card with the build command
    with pytest.raises(FileNotFoundError, match=r"policylab's SAC builds it: .*policylab/data/hopper/README.md"):
        OfflineTransitionDataModule("hopper-expert-v5").load()


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


# ------------------------------------------------------------------ bad values (issue 17)
def _hopper_file(tmp_path, hopper_arrays, change=None, name="hopper_x-v5.hdf5", keep_next=False, **attrs):
    """The Hopper fixture's arrays (optionally changed in place by ``change``) as a real hdf5 file."""
    arrays = {k: v.copy() for k, v in hopper_arrays.items() if "/" not in k and (keep_next or k != "next_observations")}
    if change is not None:
        arrays = change(arrays) or arrays
    return write_d4rl_hdf5(tmp_path / name, arrays, {"env_id": "Hopper-v5", **attrs})


def _set(key, index, value):
    def change(arrays):
        arrays[key] = arrays[key].astype(np.float64 if isinstance(value, float) and abs(value) > 3e38 else None)
        arrays[key][index] = value

    return change


@pytest.mark.parametrize("key", ["observations", "next_observations"])
def test_one_huge_observation_is_refused_naming_column_and_row(tmp_path, hopper_arrays, key):
    # before: 1e30 overflowed the float32 std to inf and every normalized observation became 0
    path = _hopper_file(tmp_path, hopper_arrays, _set(key, (5, 2), 1e30), keep_next=True)
    with pytest.raises(DatasetError, match=rf"'{key}' column 2 holds 1e\+30 at row 5, which dominates.*float32"):
        OfflineTransitionDataModule(str(path)).load()


def test_statistics_are_float64_so_large_columns_normalize(tmp_path, hopper_arrays):
    def scale(arrays):
        arrays["observations"][:, 0] *= 1e20  # squares of 1e20 overflow float32 (max 3.4e38)

    dm = OfflineTransitionDataModule(str(_hopper_file(tmp_path, hopper_arrays, scale))).load()
    mean, std = dm.observation_statistics
    kept = hopper_arrays["observations"][:-1][~hopper_arrays["timeouts"][:-1], 0].astype(np.float64) * 1e20
    assert np.isclose(std[0].item(), kept.std(), rtol=1e-4)  # float32 arithmetic gave inf here
    obs = dm.buffer.all().obs[:, 0].double()
    assert abs(obs.mean().item()) < 1e-3 and abs(obs.std().item() - 1) < 1e-2


def test_a_dominating_value_that_float32_keeps_warns(tmp_path, hopper_arrays):
    column = hopper_arrays["observations"][:, 0]
    spread = float(np.percentile(column, 99) - np.percentile(column, 1))
    # std ~ value / sqrt(3000): about 2e4 spreads (warned), still ~3e4 float32 steps over the rest (kept)
    path = _hopper_file(tmp_path, hopper_arrays, _set("observations", (10, 0), 1e6 * spread))
    with pytest.warns(UserWarning, match=r"'observations' column 0 holds .* at row 10, which dominates"):
        OfflineTransitionDataModule(str(path)).load()


def test_float64_values_beyond_float32_are_refused(tmp_path, hopper_arrays):
    path = _hopper_file(tmp_path, hopper_arrays, _set("rewards", 4, 1e39))
    with pytest.raises(DatasetError, match=r"'rewards' row 4 holds 1e\+39, beyond the float32 range"):
        OfflineTransitionDataModule(str(path)).load()


def test_actions_outside_the_env_bound_are_refused(tmp_path, hopper_arrays):
    path = _hopper_file(tmp_path, hopper_arrays, _set("actions", (7, 1), 50.0))
    with pytest.raises(
        DatasetError, match=r"'actions' row 7 holds 50 in dimension 1, outside the action space of Hopper-v5 \[-1, 1\]"
    ):
        OfflineTransitionDataModule(str(path)).load()
    # float noise within 1e-3 of the bound is data, not an error
    noisy = _hopper_file(tmp_path, hopper_arrays, _set("actions", (7, 1), 1.0005), name="hopper_noisy-v5.hdf5")
    assert OfflineTransitionDataModule(str(noisy)).load().max_action == 1.0
    # an explicit action_bound is what the data is checked against
    with pytest.raises(DatasetError, match=r"row 0 holds .* outside action_bound \[-0.5, 0.5\]"):
        OfflineTransitionDataModule(str(noisy), action_bound=0.5).load()


def test_clip_actions_clips_and_reports_the_count(tmp_path, hopper_arrays, caplog):
    def two_out(arrays):
        arrays["actions"][7, 1], arrays["actions"][8, 0] = 50.0, -3.0

    path = _hopper_file(tmp_path, hopper_arrays, two_out)
    with caplog.at_level(logging.INFO):
        dm = OfflineTransitionDataModule(str(path), clip_actions=True).load()
    assert "clipped 2 action values to the action space of Hopper-v5" in caplog.text
    actions = dm.buffer.all().action
    assert actions.abs().max().item() == 1.0
    kept = ~hopper_arrays["timeouts"][:-1]  # rows 7 and 8 are the 7th and 8th transitions unless a timeout precedes
    assert kept[:9].all()
    assert actions[7, 1].item() == 1.0 and actions[8, 0].item() == -1.0


@pytest.mark.parametrize(
    "key,value,shown", [("terminals", np.nan, "nan"), ("terminals", 2.0, "2.0"), ("timeouts", 0.5, "0.5")]
)
def test_flags_other_than_zero_or_one_are_refused(tmp_path, hopper_arrays, key, value, shown):
    def change(arrays):
        arrays[key] = arrays[key].astype(np.float32)
        arrays[key][11] = value

    path = _hopper_file(tmp_path, hopper_arrays, change)
    with pytest.raises(DatasetError, match=rf"'{key}' row 11 holds {shown}; it must be 0 or 1 .*\(1 of 3000 rows"):
        OfflineTransitionDataModule(str(path)).load()


def test_flags_as_numbers_or_column_vectors_load_like_booleans(tmp_path, hopper_arrays):
    def column(arrays):
        arrays["terminals"] = arrays["terminals"].astype(np.float32)[:, None]
        arrays["timeouts"] = arrays["timeouts"].astype(np.uint8)[:, None]
        arrays["rewards"] = arrays["rewards"][:, None]

    plain = OfflineTransitionDataModule(str(_hopper_file(tmp_path, hopper_arrays))).buffer.all()
    shaped = OfflineTransitionDataModule(
        str(_hopper_file(tmp_path, hopper_arrays, column, name="hopper_col-v5.hdf5"))
    ).buffer.all()
    for field in plain._fields:
        torch.testing.assert_close(getattr(shaped, field), getattr(plain, field), msg=field)

    def two_columns(arrays):
        arrays["terminals"] = np.stack([arrays["terminals"], arrays["terminals"]], axis=1)

    path = _hopper_file(tmp_path, hopper_arrays, two_columns, name="hopper_two-v5.hdf5")
    with pytest.raises(DatasetError, match=r"'terminals' must be 1-D \[N\] \(or \[N, 1\]\), got shape \(3000, 2\)"):
        OfflineTransitionDataModule(str(path)).load()


def test_a_single_row(tmp_path, hopper_arrays):
    def first_row(arrays):
        return {k: v[:1] for k, v in arrays.items()}

    path = _hopper_file(tmp_path, hopper_arrays, first_row)
    with pytest.raises(DatasetError, match="no transition can be built: it holds a single row.*next_observations"):
        OfflineTransitionDataModule(str(path)).load()
    with_next = _hopper_file(tmp_path, hopper_arrays, first_row, name="hopper_one-v5.hdf5", keep_next=True)
    dm = OfflineTransitionDataModule(str(with_next), batch_size=4).load()
    batch = next(iter(dm.train_dataloader()))
    assert len(dm.buffer) == 1 and batch.obs.shape == (4, 11) and torch.equal(batch.obs[0], batch.obs[3])


def test_all_timeouts(tmp_path, hopper_arrays):
    def all_timeouts(arrays):
        arrays["timeouts"][:] = True
        arrays["terminals"][:] = False

    path = _hopper_file(tmp_path, hopper_arrays, all_timeouts)
    with pytest.raises(DatasetError, match=r"every row before its last \(2999 of 3000\) ends an episode by timeout"):
        OfflineTransitionDataModule(str(path)).load()
    # with next_observations every row is a one-step episode that bootstraps: valid data
    with_next = _hopper_file(tmp_path, hopper_arrays, all_timeouts, name="hopper_to-v5.hdf5", keep_next=True)
    dm = OfflineTransitionDataModule(str(with_next)).load()
    everything = dm.buffer.all()
    assert len(dm.buffer) == 3000 and everything.timeout.min() == 1 and everything.terminal.max() == 0
    np.testing.assert_allclose(dm.episode_returns, hopper_arrays["rewards"], rtol=1e-6)


def test_truncated_npz_is_named(tmp_path, hopper_arrays):
    np.savez(tmp_path / "full.npz", **{k: v for k, v in hopper_arrays.items() if "/" not in k})
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut.npz: the .npz file is truncated or corrupt"):
        OfflineTransitionDataModule(str(tmp_path / "cut.npz")).load()


def test_files_that_are_not_npz_are_named_as_such(tmp_path):
    np.save(tmp_path / "single.npy", np.zeros((3, 2)))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DatasetError, match=r"single.npz is a single .npy array, not an .npz archive"):
        OfflineTransitionDataModule(str(tmp_path / "single.npz")).load()
    (tmp_path / "table.npz").write_text("observations,actions\n1,2\n")
    with pytest.raises(DatasetError, match=r"table.npz is not an .npz file \(a zip archive"):
        OfflineTransitionDataModule(str(tmp_path / "table.npz")).load()


def test_data_that_does_not_fit_the_env_stops_at_load(tmp_path, hopper_arrays):
    rng = np.random.default_rng(0)
    walker_shaped = {
        "observations": rng.standard_normal((50, 17)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (50, 6)).astype(np.float32),
        "rewards": np.ones(50, np.float32),
        "terminals": np.zeros(50, bool),
    }
    path = write_d4rl_hdf5(tmp_path / "hopper_walker-v5.hdf5", walker_shaped)  # named hopper: Hopper-v5 inferred
    with pytest.raises(
        DatasetError,
        match=r"observations \[50, 17\] and actions \[50, 6\], but Hopper-v5 observes \(11,\) and acts in \(3,\)",
    ):
        OfflineTransitionDataModule(str(path)).load()
    hopper = _hopper_file(tmp_path, hopper_arrays)
    with pytest.raises(DatasetError, match=r"but HalfCheetah-v5 observes \(17,\) and acts in \(6,\)"):
        OfflineTransitionDataModule(str(hopper), env_id="HalfCheetah-v5").load()
    with pytest.raises(DatasetError, match=r"unknown gymnasium environment id 'Hoper-v5'.*Hopper-v5.*env_id"):
        OfflineTransitionDataModule(str(hopper), env_id="Hoper-v5").load()


def test_observation_normalizer_refuses_unusable_statistics():
    from policylab.nn.normalization import ObservationNormalizer

    normalizer = ObservationNormalizer(3)
    with pytest.raises(ValueError, match=r"dimension 1 are unusable \(mean 0, std inf\)"):
        normalizer.set_statistics(torch.zeros(3), torch.tensor([1.0, float("inf"), 1.0]))
    with pytest.raises(ValueError, match=r"dimension 2 are unusable \(mean 0, std 0\)"):
        normalizer.set_statistics(torch.zeros(3), torch.tensor([1.0, 1.0, 0.0]))
    assert torch.equal(normalizer.std, torch.ones(3))  # nothing half-set
