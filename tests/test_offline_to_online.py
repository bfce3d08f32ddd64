"""Offline-to-online in one run: the online phase appends to the offline buffer (or, online_only,
trains on the collected rows alone after a policy warm-up, as RO2O), and a run killed during it
resumes with everything it had collected."""

import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from conftest import ROOT, run_cli

from policylab.callbacks import EnvInteraction
from policylab.datamodules import OfflineTransitionDataModule
from policylab.datamodules.transitions import TransitionBuffer
from policylab.modules import TD3BC

SMALL_A2PR = [
    "--model.init_args.actor_hidden_dims",
    "[32,32]",
    "--model.init_args.critic_hidden_dims",
    "[32,32]",
    "--model.init_args.value_hidden_dims",
    "[32,32]",
    "--model.init_args.vae_hidden_dims",
    "[32,32]",
    "--data.init_args.batch_size",
    "64",
]


class _Hook(TD3BC):
    online_started_at = None

    def on_online_start(self):
        self.online_started_at = self.global_step


def test_online_phase_appends_normalized_transitions_and_calls_the_hook(hopper_hdf5):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=64, online_capacity=1000).load()
    offline = len(dm.buffer)
    model = _Hook(dm.obs_dim, dm.action_dim, dm.max_action, actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32))
    interaction = EnvInteraction(start_step=50, env_steps_per_update=2, exploration_noise=0.1, seed=3)
    trainer = L.Trainer(
        max_steps=100,
        logger=False,
        enable_checkpointing=False,
        callbacks=[interaction],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    assert model.online_started_at == 50
    assert interaction.env_steps == 2 * 50 and len(dm.buffer) == offline + 100
    online = dm.buffer.all().obs[offline:]
    mean, std = dm.observation_statistics
    # stored observations are normalized with the dataset's statistics: raw = obs * std + mean is a Hopper state
    raw = online * std + mean
    assert raw[:, 0].min() > 0.5  # torso height of a standing or falling hopper, never near 0 as normalized values are
    assert torch.equal(
        dm.buffer.all().timeout[offline:].bool() & dm.buffer.all().terminal[offline:].bool(),
        torch.zeros(100, dtype=torch.bool),
    )


def test_run_killed_in_the_online_phase_resumes_with_its_buffer(tmp_path):
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/a2pr_hopper.yaml"),
        *SMALL_A2PR,
        "--trainer.max_steps",
        "1000",
        "--trainer.callbacks.init_args.start_step",
        "100",
        "--evaluation.every_n_steps",
        "200",
        "--evaluation.n_episodes",
        "1",
        "--trainer.log_every_n_steps",
        "100",
        "--trainer.enable_progress_bar",
        "false",
    ]
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = tmp_path / "runs/a2pr_hopper/version_0/checkpoints/last.ckpt"
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and process.poll() is None:
        if last.exists():
            try:
                killed_at = torch.load(last, weights_only=True)["global_step"]
            except Exception:  # caught mid-write
                killed_at = None
            if killed_at is not None and killed_at >= 400:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.1)
    process.wait()
    assert killed_at is not None and 400 <= killed_at < 1000, process.stderr.read()[-3000:]
    before = torch.load(last, weights_only=True)
    data_before = before["OfflineTransitionDataModule"]
    interaction_before = next(v for k, v in before["callbacks"].items() if k.startswith("EnvInteraction"))
    assert interaction_before["env_steps"] == before["global_step"] - 100 == data_before["appended"]

    result = run_cli(*args, "--ckpt_path", "last", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(last, weights_only=True)
    assert after["global_step"] == 1000
    data_after = after["OfflineTransitionDataModule"]
    interaction_after = next(v for k, v in after["callbacks"].items() if k.startswith("EnvInteraction"))
    # nothing lost, nothing counted twice: one env step per gradient step after step 100
    assert interaction_after["env_steps"] == data_after["appended"] == 900
    torch.testing.assert_close(
        data_after["appended_rows"][: data_before["appended"]], data_before["appended_rows"], rtol=0, atol=0
    )
    for key in ("obs_normalizer.mean", "obs_normalizer.std"):
        torch.testing.assert_close(after["state_dict"][key], before["state_dict"][key], rtol=0, atol=0)


def test_online_only_buffer_samples_collected_rows_once_there_are_any():
    rng = torch.Generator().manual_seed(0)
    initial = {
        "obs": torch.zeros(50, 3).numpy(),
        "action": torch.zeros(50, 1).numpy(),
        "reward": torch.zeros(50).numpy(),
        "next_obs": torch.zeros(50, 3).numpy(),
        "terminal": torch.zeros(50).numpy(),
        "timeout": torch.zeros(50).numpy(),
    }
    buffer = TransitionBuffer(initial, capacity=50 + 4)
    buffer.online_only = True
    assert torch.equal(buffer.sample(64, rng).reward, torch.zeros(64))  # nothing collected yet: the dataset
    for value in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):  # 6 rows into a FIFO of 4: 3, 4, 5, 6 remain
        buffer.add(obs=[[0, 0, 0]], action=[[0]], reward=[value], next_obs=[[0, 0, 0]], terminal=[0], timeout=[0])
    rewards = buffer.sample(2000, rng).reward
    assert set(rewards.tolist()) == {3.0, 4.0, 5.0, 6.0}
    buffer.online_only = False
    assert 0.0 in set(buffer.sample(2000, rng).reward.tolist())


def test_online_only_needs_room_for_the_collected_rows(hopper_hdf5):
    with pytest.raises(ValueError, match="online_capacity"):
        OfflineTransitionDataModule(str(hopper_hdf5), online_only=True)


class _CountingExplore(TD3BC):
    explore_calls = 0

    def explore(self, obs, noise_std, generator=None):
        self.explore_calls += 1
        return super().explore(obs, noise_std, generator)

    def on_online_start(self):
        self.explore_calls = 0


def test_policy_warmup_collects_with_the_policy_before_the_first_online_update(hopper_hdf5):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(hopper_hdf5), batch_size=64, online_capacity=100, online_only=True).load()
    offline = len(dm.buffer)
    model = _CountingExplore(
        dm.obs_dim, dm.action_dim, dm.max_action, actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32)
    )
    interaction = EnvInteraction(start_step=20, random_steps=30, warmup_actions="policy", seed=3)
    trainer = L.Trainer(
        max_steps=40,
        logger=False,
        enable_checkpointing=False,
        callbacks=[interaction],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    # 30 warm-up steps by the policy, then one per update for steps 20..39: every one by the policy
    assert interaction.env_steps == 30 + 20 == model.explore_calls
    assert len(dm.buffer) == offline + 50 and dm.buffer.appended == 50
