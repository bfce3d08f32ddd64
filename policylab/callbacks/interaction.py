"""Online data collection: the current policy steps a gymnasium env and its transitions go into the
buffer the datamodule samples from. Used by online SAC and by offline-to-online finetuning."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from policylab.envs.make import make_env
from policylab.envs.scores import normalized_score, reference_scores

D4RL_STEP_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


class StepRecording:
    """Every environment step in the D4RL layout (raw observations, ``infos/qpos``, ``infos/qvel``),
    in numpy arrays that grow by doubling."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    def append(self, **step) -> None:
        if not self.arrays:
            self.arrays = {k: np.zeros((1024, *np.shape(v)), dtype=np.asarray(v).dtype) for k, v in step.items()}
        if self.size == len(next(iter(self.arrays.values()))):
            self.arrays = {k: np.concatenate([a, np.zeros_like(a)]) for k, a in self.arrays.items()}
        for key, value in step.items():
            self.arrays[key][self.size] = value
        self.size += 1

    def view(self) -> dict[str, np.ndarray]:
        return {k: a[: self.size] for k, a in self.arrays.items()}

    def mark_cut(self) -> None:
        """The episode in progress ends here (a run resumed from a checkpoint starts a new one)."""
        if self.size and not (self.arrays["terminals"][self.size - 1] or self.arrays["timeouts"][self.size - 1]):
            self.arrays["timeouts"][self.size - 1] = True

    def state(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in self.view().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.arrays = {k: v.numpy().copy() for k, v in state.items()}
        self.size = len(next(iter(self.arrays.values()))) if self.arrays else 0


class EnvInteraction(Callback):
    """From training step ``start_step`` on, step the env ``env_steps_per_update`` times before
    every gradient step and append the transitions to the datamodule's buffer.

    - Before the first of these, the module's ``on_online_start()`` hook runs (a method may
      change its regularization there) and ``random_steps`` warm-up steps fill the buffer
      before any online update: uniform random actions (``warmup_actions: random``, SAC's
      warm-up) or the policy's exploration actions (``policy``, RO2O's ``train_starts``); with
      ``start_step = 0`` this happens before the first batch is drawn.
    - Actions come from ``pl_module.exploration_action``: deterministic actors add Gaussian noise
      of ``exploration_noise * max_action``, stochastic actors sample.
    - Time limits are stored as timeouts, never as terminals, so bootstrapping continues.
    - Logs ``online/episode_return``, ``online/normalized_score`` and ``online/env_steps`` at
      each episode end.
    - ``record``: also keep every step in the D4RL layout (``infos/qpos``, ``infos/qvel``) in
      :attr:`recording`; the dataset builder writes ``medium-replay`` from it.
    - Everything it needs to continue (counters, noise generator, recording) is in the
      checkpoint, and the datamodule saves the collected rows. A resumed run starts a new episode.
      A run resumed with an empty buffer (a checkpoint saved without its rows) first refills it
      with ``max(random_steps, batch_size)`` steps of its current policy.

    Args:
        start_step: the training step at which collection starts (the offline steps before
            finetuning; 0 for online RL).
        random_steps: warm-up env steps collected before the first online gradient step.
        warmup_actions: what acts in the warm-up: ``random`` (uniform actions) or ``policy``
            (``pl_module.explore``, as every later step).
        env_steps_per_update: env steps per gradient step.
        exploration_noise: noise scale for deterministic actors, in units of ``max_action``.
        env_id: the env to collect in (default: the datamodule's ``env_id``).
        seed: seed of the env resets, the random actions and the exploration noise.
        record: keep a D4RL-layout recording of every step.
    """

    def __init__(
        self,
        start_step: int = 0,
        random_steps: int = 0,
        env_steps_per_update: int = 1,
        exploration_noise: float = 0.1,
        env_id: str | None = None,
        seed: int = 0,
        record: bool = False,
        warmup_actions: str = "random",
    ) -> None:
        super().__init__()
        if warmup_actions not in ("random", "policy"):
            raise ValueError(f"warmup_actions must be 'random' or 'policy', got {warmup_actions!r}")
        self.warmup_actions = warmup_actions
        if start_step < 0 or random_steps < 0 or env_steps_per_update < 1 or exploration_noise < 0:
            raise ValueError(
                "EnvInteraction needs start_step >= 0, random_steps >= 0, env_steps_per_update >= 1 and "
                f"exploration_noise >= 0; got {start_step}, {random_steps}, {env_steps_per_update}, {exploration_noise}"
            )
        self.start_step, self.random_steps, self.env_steps_per_update = start_step, random_steps, env_steps_per_update
        self.exploration_noise, self.env_id, self.seed, self.record = exploration_noise, env_id, seed, record
        self.env_steps = 0
        self.episodes = 0
        self.recording = StepRecording() if record else None
        self._env = None
        self._generator_state: torch.Tensor | None = None

    # ----------------------------------------------------------------- setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "add_transitions"):
            raise TypeError(
                f"EnvInteraction needs a transition datamodule with add_transitions(), got {type(datamodule).__name__}"
            )
        env_id = self.env_id or datamodule.env_id
        if env_id is None:
            raise ValueError("EnvInteraction: no env_id given and the datamodule does not name its environment")
        self._env_id = env_id
        self._refs = (datamodule.reference_scores if self.env_id is None else None) or reference_scores(env_id)
        self._rank = trainer.global_rank

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_fit_start runs after the callbacks' checkpoint state is restored and before Lightning
        # draws the first batch, so an online run's warm-up fills the empty buffer in time.
        self._env = make_env(self._env_id)
        self._mujoco_data = getattr(self._env.unwrapped, "data", None)
        self._env.action_space.seed(self.seed + 7919 * self._rank + self.env_steps)
        self._generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + 7919 * self._rank)
        if self._generator_state is not None:
            self._generator.set_state(self._generator_state)
        self._obs_mean = pl_module.obs_normalizer.mean.cpu().numpy()
        self._obs_std = pl_module.obs_normalizer.std.cpu().numpy()
        self._reset()
        self._online = False
        if self.start_step == 0:
            self._begin_online(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # ----------------------------------------------------------------- stepping
    def _reset(self) -> None:
        self._obs, _ = self._env.reset(seed=self.seed + 7919 * self._rank + self.episodes)
        self._episode_return, self._episode_length = 0.0, 0

    def _step(self, trainer: L.Trainer, action: np.ndarray) -> None:
        env, obs = self._env, self._obs
        if self.recording is not None and self._mujoco_data is not None:
            qpos, qvel = self._mujoco_data.qpos.copy(), self._mujoco_data.qvel.copy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        trainer.datamodule.add_transitions(obs[None], action[None], [reward], next_obs[None], [terminated], [truncated])
        if self.recording is not None:
            f32 = np.float32
            step = dict(
                zip(D4RL_STEP_KEYS, (obs.astype(f32), action, f32(reward), terminated, truncated, next_obs.astype(f32)))
            )
            if self._mujoco_data is not None:
                step.update({"infos/qpos": qpos.astype(f32), "infos/qvel": qvel.astype(f32)})
            self.recording.append(**step)
        self.env_steps += 1
        self._episode_return += float(reward)
        self._episode_length += 1
        self._obs = next_obs
        if terminated or truncated:
            self.episodes += 1
            self._log_episode(trainer)
            self._reset()

    def _begin_online(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._online = True
        hook = getattr(pl_module, "on_online_start", None)
        if hook is not None:
            hook()
        if self.env_steps > 0 and len(trainer.datamodule.buffer) == 0:
            # resumed from a checkpoint without the collected rows (``checkpoint_rows=False``)
            refill = max(self.random_steps, trainer.datamodule.batch_size)
            rank_zero_info(f"EnvInteraction: the buffer was not checkpointed; refilling it with {refill} policy steps")
            for _ in range(refill):
                self._policy_step(trainer, pl_module)
        while self.env_steps < self.random_steps:
            if self.warmup_actions == "policy":
                self._policy_step(trainer, pl_module)
            else:
                self._step(trainer, self._env.action_space.sample().astype(np.float32))

    def _policy_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        normalized = ((self._obs - self._obs_mean) / self._obs_std).astype(np.float32)
        action = pl_module.explore(normalized[None], self.exploration_noise, self._generator)[0]
        self._step(trainer, action.astype(np.float32))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step < self.start_step:
            return
        if not self._online:
            self._begin_online(trainer, pl_module)
        for _ in range(self.env_steps_per_update):
            self._policy_step(trainer, pl_module)

    def _log_episode(self, trainer: L.Trainer) -> None:
        metrics = {
            "online/episode_return": self._episode_return,
            "online/episode_length": float(self._episode_length),
            "online/env_steps": float(self.env_steps),
        }
        if self._refs is not None:
            metrics["online/normalized_score"] = float(normalized_score(self._episode_return, *self._refs))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        state = {"env_steps": self.env_steps, "episodes": self.episodes}
        if getattr(self, "_generator", None) is not None:
            state["generator"] = self._generator.get_state()
        if self.recording is not None:
            state["recording"] = self.recording.state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.env_steps = int(state_dict.get("env_steps", 0))
        self.episodes = int(state_dict.get("episodes", 0))
        self._generator_state = state_dict.get("generator")
        if self.recording is not None and "recording" in state_dict:
            self.recording.load(state_dict["recording"])
            self.recording.mark_cut()
        self.episodes += 1  # the episode cut by the checkpoint counts as ended; a new one starts
