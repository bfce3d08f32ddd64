"""Offline-to-online in one run: the online phase appends to the offline buffer, and a run killed
during it resumes with everything it had collected."""

import signal
import subprocess
import sys
import time

import lightning as L
import torch
from conftest import ROOT, run_cli

from policylab.callbacks import EnvInteraction
from policylab.datamodules import OfflineTransitionDataModule
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
