"""Building D4RL-style MuJoCo datasets with policylab's own SAC, as D4RL built its datasets.

Stages, each resumable and each written atomically (an interrupted build leaves no file under a
final name, and a rerun skips what is done):

1. ``train``: online SAC (:class:`~policylab.modules.SAC`) for ``sac_steps`` env-and-gradient
   steps. Every ``eval_every`` steps the policy is evaluated and its actor saved under
   ``<work_dir>/policies/``; every env step is recorded in the D4RL layout. ``last.ckpt`` makes
   the stage resumable (rerunning with a larger ``sac_steps`` continues the same run).
2. ``pick``: the medium policy is the first snapshot whose re-evaluated normalized score lies in
   ``medium_range`` (D4RL: a policy stopped at about a third of expert return); the final
   snapshot is the expert policy when it scores at least ``expert_min_score``.
3. datasets, each ``<out>/<env>_<kind>-v5.hdf5`` (and a Minari dataset when asked):
   ``medium-replay`` (every step recorded up to the medium snapshot), ``medium`` (the medium
   policy sampled stochastically), ``random`` (uniform random actions), ``expert`` (the final
   policy, stochastic), ``medium-expert`` (medium then expert).

A ``portable`` build keeps its checkpoint to a few MB (no replay buffer, no recording), so a SAC
run longer than one machine's session can be carried to the next one (committed, copied) and
resumed there: each resume refills the buffer with the current policy. It cannot write
``medium-replay``; its final policy becomes a bundle's ``expert_policy.pt`` (:func:`export_expert`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from policylab.datamodules.d4rl_format import DatasetError, read_d4rl_hdf5, write_d4rl_hdf5
from policylab.datamodules.transitions import episode_returns
from policylab.datasets.files import write_dataset
from policylab.envs.make import GYMNASIUM_ENV_OF_FAMILY
from policylab.envs.scores import normalized_score, reference_scores

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")


@dataclass
class BuildConfig:
    """Everything a build depends on; stored in ``<work_dir>/build.json`` and checked on resume."""

    family: str = "hopper"
    work_dir: str = "data/build/hopper"
    out_dir: str = "data"
    seed: int = 0
    sac_steps: int = 300_000
    random_steps: int = 5_000
    eval_every: int = 5_000
    eval_episodes: int = 10
    pick_episodes: int = 20
    medium_range: tuple[float, float] = (30.0, 55.0)
    expert_min_score: float = 90.0
    rollout_steps: int = 1_000_000
    threads: int = 1
    minari: bool = False
    minari_namespace: str = "policylab"
    kinds: tuple[str, ...] = field(default=KINDS)
    policies_from: str | None = None  # a bundle folder (see export_bundle): use its policies, train nothing
    portable: bool = False  # checkpoints without replay buffer and recording (see the module docstring)

    @property
    def env_id(self) -> str:
        if self.family not in GYMNASIUM_ENV_OF_FAMILY:
            raise ValueError(f"unknown env family {self.family!r}; known: {', '.join(GYMNASIUM_ENV_OF_FAMILY)}")
        return GYMNASIUM_ENV_OF_FAMILY[self.family]

    def dataset_path(self, kind: str) -> Path:
        return Path(self.out_dir) / f"{self.family}_{kind.replace('-', '_')}-v5.hdf5"

    def minari_id(self, kind: str) -> str:
        return f"{self.minari_namespace}/{self.family}/{kind}-v0"


# ----------------------------------------------------------------------------- stage 1: SAC
def policy_dir(config: BuildConfig) -> Path:
    return Path(config.work_dir) / "policies"


def train_sac(config: BuildConfig, progress: bool = True) -> Path:
    """Train (or resume) the SAC run; returns its ``last.ckpt``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from policylab.callbacks import EnvEvaluation, EnvInteraction, PolicySnapshots, StepProgressBar
    from policylab.datamodules.replay import ReplayBufferDataModule
    from policylab.modules.online.sac import SAC

    work = Path(config.work_dir)
    checkpoints = work / "sac" / "checkpoints"
    last = checkpoints / "last.ckpt"
    if last.is_file() and _checkpoint_step(last) >= config.sac_steps:
        return last
    L.seed_everything(config.seed, verbose=False)
    datamodule = ReplayBufferDataModule(
        config.env_id, capacity=max(config.sac_steps, 1), seed=config.seed, checkpoint_rows=not config.portable
    ).load()
    model = SAC(datamodule.obs_dim, datamodule.action_dim, datamodule.max_action)
    callbacks = [
        EnvInteraction(random_steps=config.random_steps, seed=config.seed, record=not config.portable),
        EnvEvaluation(every_n_steps=config.eval_every, n_episodes=config.eval_episodes, seed=10_000 + config.seed),
        PolicySnapshots(policy_dir(config), every_n_steps=config.eval_every),
        ModelCheckpoint(
            dirpath=checkpoints,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=config.eval_every,
            enable_version_counter=False,  # a work dir copied from elsewhere: go on writing its last.ckpt
        ),
    ]
    if progress:
        callbacks.append(StepProgressBar())
    trainer = L.Trainer(
        max_steps=config.sac_steps,
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
        logger=TensorBoardLogger(work, name="sac", version=0, default_hp_metric=False),
        callbacks=callbacks,
        log_every_n_steps=1000,
        enable_progress_bar=progress,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule, ckpt_path=str(last) if last.is_file() else None)
    return last


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def recorded_steps(last_ckpt: Path) -> dict[str, np.ndarray]:
    """The D4RL-layout recording of every SAC env step, from the run's checkpoint."""
    state = torch.load(last_ckpt, map_location="cpu", weights_only=True)
    for key, value in state["callbacks"].items():
        if key.startswith("EnvInteraction") and "recording" in value:
            return {k: v.numpy() for k, v in value["recording"].items()}
    raise DatasetError(f"{last_ckpt} holds no recording of the SAC run's steps")


# ----------------------------------------------------------------------------- stage 2: pick
def load_snapshots(config: BuildConfig) -> list[dict]:
    """Policy snapshots of the SAC run, ordered by step."""
    files = sorted(policy_dir(config).glob("step_*.pt"))
    return [torch.load(f, map_location="cpu", weights_only=True) | {"path": str(f)} for f in files]


def snapshot_actor(snapshot: dict):
    """A ``TanhGaussianActor`` with a snapshot's weights."""
    from policylab.nn.policies import TanhGaussianActor

    actor = TanhGaussianActor(**snapshot["actor_config"])
    actor.load_state_dict(snapshot["actor"])
    return actor.eval()


def evaluate_snapshot(config: BuildConfig, snapshot: dict, episodes: int) -> float:
    """Normalized score of a snapshot's deterministic policy over ``episodes`` fresh episodes."""
    from policylab.envs.evaluation import evaluate_policy

    actor = snapshot_actor(snapshot)
    with torch.no_grad():
        returns = evaluate_policy(
            lambda obs: actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy(),
            config.env_id,
            episodes,
            seed=50_000 + config.seed,
        )
    return float(np.mean(normalized_score(returns, *reference_scores(config.env_id))))


def _picked(snapshot: dict, path: str | os.PathLike, score: float) -> dict:
    """The entry :func:`pick_policies` keeps for a chosen snapshot."""
    return {"path": str(path), "step": snapshot["step"], "env_steps": snapshot["env_steps"], "score": float(score)}


def pick_policies(config: BuildConfig, need_medium: bool = True) -> dict:
    """Choose the medium and expert snapshots; the choice is saved in ``<work_dir>/picked.json``.
    Without ``need_medium`` a run with no snapshot in the medium range gets ``medium: None``."""
    picked_file = Path(config.work_dir) / "picked.json"
    if picked_file.is_file():
        picked = json.loads(picked_file.read_text())
        if picked.get("sac_steps") == config.sac_steps and "final" in picked and (picked["medium"] or not need_medium):
            return picked
    snapshots = load_snapshots(config)
    if not snapshots:
        raise DatasetError(f"no policy snapshots under {policy_dir(config)}: train SAC first")
    low, high = config.medium_range
    medium = None
    for snapshot in snapshots:
        if low <= snapshot["score"] <= high:
            score = evaluate_snapshot(config, snapshot, config.pick_episodes)
            if low <= score <= high:
                medium = _picked(snapshot, snapshot["path"], score)
                break
    if medium is None and need_medium:
        best = max(snapshots, key=lambda s: s["score"])
        raise DatasetError(
            f"no SAC snapshot scores within the medium range {config.medium_range} (best {best['score']:.1f} at "
            f"step {best['step']}); train longer with a larger --sac-steps"
        )
    last = [s for s in snapshots if s["step"] <= config.sac_steps][-1]
    final_score = evaluate_snapshot(config, last, config.pick_episodes)
    final = _picked(last, last["path"], final_score)
    expert = final if final_score >= config.expert_min_score else None
    picked = {
        "sac_steps": config.sac_steps,
        "medium": medium,
        "final": final,
        "expert": expert,
        "final_score": final_score,
    }
    _atomic_write_text(picked_file, json.dumps(picked, indent=2))
    return picked


# ----------------------------------------------------------------------------- stage 3: datasets
def rollout_policy(
    config: BuildConfig, snapshot: dict | None, steps: int, seed: int, progress: bool = True
) -> dict[str, np.ndarray]:
    """Record ``steps`` env steps of a snapshot's stochastic policy (uniform random when None)."""
    from policylab.envs.rollout import record_steps

    if snapshot is None:
        return record_steps(config.env_id, steps, policy=None, seed=seed, progress=progress)
    actor = snapshot_actor(snapshot)
    generator = torch.Generator().manual_seed(seed)

    def sample(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor(torch.as_tensor(obs, dtype=torch.float32)[None], generator)[0][0].numpy()

    return record_steps(config.env_id, steps, policy=sample, seed=seed, progress=progress)


def _concatenate(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = first.keys() & second.keys()
    out = {k: np.concatenate([first[k], second[k]]) for k in keys}
    # the first part's last episode ends where the second part starts
    last = len(first["rewards"]) - 1
    if not (out["terminals"][last] or out["timeouts"][last]):
        out["timeouts"][last] = True
    return out


def dataset_statistics(arrays: dict[str, np.ndarray], env_id: str) -> dict:
    """Transitions, episodes and return statistics (raw and normalized) of D4RL-layout arrays."""
    returns = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
    refs = reference_scores(env_id)
    scores = normalized_score(returns, *refs)
    return {
        "transitions": int(len(arrays["rewards"])),
        "episodes": int(len(returns)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "normalized_score_mean": float(scores.mean()),
        "terminals": int(np.asarray(arrays["terminals"]).sum()),
        "timeouts": int(np.asarray(arrays["timeouts"]).sum()),
    }


def make_dataset(
    config: BuildConfig, kind: str, last_ckpt: Path | None, picked: dict | None, progress: bool = True
) -> dict[str, np.ndarray] | None:
    """The arrays of one dataset kind, or None when its policy does not exist (no expert)."""
    medium = picked and picked["medium"]
    expert = picked and picked["expert"]
    if kind == "random":
        return rollout_policy(config, None, config.rollout_steps, seed=config.seed + 1, progress=progress)
    if kind == "medium-replay":
        steps = recorded_steps(last_ckpt)
        n = int(medium["env_steps"])
        arrays = {k: v[:n].copy() for k, v in steps.items()}
        if not (arrays["terminals"][-1] or arrays["timeouts"][-1]):
            arrays["timeouts"][-1] = True  # the buffer stops inside an episode
        return arrays
    if kind == "medium":
        return rollout_policy(
            config,
            torch.load(medium["path"], weights_only=True),
            config.rollout_steps,
            seed=config.seed + 2,
            progress=progress,
        )
    if expert is None:
        return None
    if kind == "expert":
        return rollout_policy(
            config,
            torch.load(expert["path"], weights_only=True),
            config.rollout_steps,
            seed=config.seed + 3,
            progress=progress,
        )
    if kind == "medium-expert":
        medium_arrays, _ = read_d4rl_hdf5(config.dataset_path("medium"))
        expert_arrays, _ = read_d4rl_hdf5(config.dataset_path("expert"))
        return _concatenate(medium_arrays, expert_arrays)
    raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")


def build(config: BuildConfig, progress: bool = True, log=print) -> dict[str, dict]:
    """Run every stage that is not done yet; returns the statistics of each dataset written."""
    unknown = set(config.kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown dataset kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    torch.set_num_threads(config.threads)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    _check_config(config)
    # medium-expert reads medium and expert from disk: build those first
    kinds = [k for k in KINDS if k in config.kinds or (k in ("medium", "expert") and "medium-expert" in config.kinds)]
    needs_sac = not kinds or any(k != "random" for k in kinds)  # no kinds: only train SAC
    need_medium = any(k.startswith("medium") for k in kinds)
    if config.portable and "medium-replay" in kinds:
        raise ValueError(
            "a portable build keeps no recording of its steps, so it cannot write medium-replay; "
            "build medium-replay without --portable"
        )
    last_ckpt = picked = None
    if config.policies_from is not None:
        if "medium-replay" in kinds:
            raise ValueError(
                "medium-replay is the SAC run's replay buffer: it cannot be regenerated from saved policies"
            )
        picked, needs_sac = bundle_policies(config), False
    if needs_sac:
        log(f"[train] SAC on {config.env_id} for {config.sac_steps} steps in {work / 'sac'}")
        last_ckpt = train_sac(config, progress)
    if needs_sac and kinds:
        picked = pick_policies(config, need_medium)
        log(
            "[pick] "
            + (
                f"medium: step {picked['medium']['step']} (score {picked['medium']['score']:.1f}); "
                if picked["medium"]
                else ""
            )
            + (
                f"expert: step {picked['expert']['step']} (score {picked['expert']['score']:.1f})"
                if picked["expert"]
                else f"no expert (final score {picked['final_score']:.1f} < {config.expert_min_score})"
            )
        )
    written = {}
    for kind in kinds:
        path = config.dataset_path(kind)
        if path.is_file():
            arrays, _ = read_d4rl_hdf5(path)
            log(f"[{kind}] {path} exists")
        else:
            arrays = make_dataset(config, kind, last_ckpt, picked, progress)
            if arrays is None:
                log(f"[{kind}] skipped: the SAC run did not reach expert level")
                continue
            attrs = _dataset_attrs(config, kind, picked)
            write_dataset(path, arrays, attrs, log=log)
            log(f"[{kind}] wrote {path}")
        stats = dataset_statistics(arrays, config.env_id)
        if config.minari:
            _write_minari_once(config, kind, arrays)
        written[kind] = stats
        log(
            f"[{kind}] {stats['transitions']} transitions, {stats['episodes']} episodes, "
            f"return {stats['return_mean']:.1f} +- {stats['return_std']:.1f}, "
            f"normalized {stats['normalized_score_mean']:.1f}"
        )
    return written


def bundle_policies(config: BuildConfig) -> dict:
    """The medium and final policies of a bundle folder, as :func:`pick_policies` returns them; the
    expert is ``expert_policy.pt`` when the bundle has one (:func:`export_expert`), else the final
    policy when it scores at least ``expert_min_score``."""
    folder = Path(config.policies_from)
    picked = {}
    for role in ("medium", "final"):
        path = folder / f"{role}_policy.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {folder}")
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
        picked[role] = _picked(snapshot, path, snapshot["score"])
    picked["final_score"] = picked["final"]["score"]
    picked["expert"] = picked["final"] if picked["final_score"] >= config.expert_min_score else None
    expert = folder / "expert_policy.pt"
    if expert.is_file():
        snapshot = torch.load(expert, map_location="cpu", weights_only=True)
        picked["expert"] = _picked(snapshot, expert, snapshot["score"])
    return picked


SHIP_LIMIT_BYTES = 30 * 10**6  # a shipped dataset file: at most 30 MB


def export_bundle(
    config: BuildConfig,
    dest: str | os.PathLike,
    kinds: tuple[str, ...] = ("medium-replay",),
    note: str | None = None,
    max_bytes: int = SHIP_LIMIT_BYTES,
) -> Path:
    """Copy what policylab ships for a built family into ``dest``: the datasets of ``kinds``, the
    medium and final policies (with their re-evaluated scores) and a card (``README.md``).

    A dataset over ``max_bytes`` is written without its ``infos/*`` arrays (qpos, qvel: the
    transitions are whole without them); still over, without ``next_observations`` too (D4RL's own
    optional key: loaders then take the next row as ``s'`` and drop the rows at timeouts, D4RL's
    ``qlearning_dataset`` rule); still over, it is not shipped and the card says how to build it."""
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    picked = pick_policies(config)
    for role in ("medium", "final"):
        snapshot = torch.load(picked[role]["path"], map_location="cpu", weights_only=True)
        snapshot["score"] = picked[role]["score"]
        torch.save(snapshot, dest / f"{role}_policy.pt")
    stats = {}
    for kind in kinds:
        source, target = config.dataset_path(kind), dest / config.dataset_path(kind).name
        arrays, attrs = read_d4rl_hdf5(source)
        shutil.copyfile(source, target)
        shipped = "whole"
        for dropped, drop in (
            ("without infos", ("infos/",)),
            ("without infos and next_observations", ("infos/", "next_")),
        ):
            if target.stat().st_size <= max_bytes:
                break
            write_d4rl_hdf5(target, {k: v for k, v in arrays.items() if not k.startswith(drop)}, attrs)
            shipped = dropped
        size = target.stat().st_size
        if size > max_bytes:
            target.unlink()
            shipped = "not shipped"
        statistics = dataset_statistics(arrays, config.env_id)
        statistics["dropped_without_next"] = 1 + int(np.asarray(arrays["timeouts"])[:-1].sum())
        stats[kind] = (source.name, statistics, size, shipped)
    card = dataset_card(config, picked, stats, max_bytes)
    if note:
        card += f"\n## Notes\n\n{note}\n"
    (dest / "README.md").write_text(card)
    return dest


EXPERT_SECTION = "## Expert policy"


def export_expert(config: BuildConfig, dest: str | os.PathLike, note: str | None = None) -> Path:
    """Copy the final policy of a (typically portable) SAC run into the bundle ``dest`` as
    ``expert_policy.pt`` when its re-evaluated score reaches ``expert_min_score``, and write the
    card's expert section (replacing an earlier one). ``build --from-bundle`` then regenerates
    ``expert`` and ``medium-expert`` from the bundle; ``note`` ends the section (how the run
    went). Returns the written policy's path."""
    dest = Path(dest)
    picked = pick_policies(config, need_medium=False)
    final = picked["final"]
    if final["score"] < config.expert_min_score:
        raise DatasetError(
            f"the final policy of {config.work_dir} (SAC step {final['step']}) scores {final['score']:.1f}, "
            f"below the expert level {config.expert_min_score}: train longer with a larger --sac-steps"
        )
    snapshot = torch.load(final["path"], map_location="cpu", weights_only=True)
    snapshot["score"] = final["score"]
    target = dest / "expert_policy.pt"
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".expert_policy.", suffix=".tmp")
    os.close(fd)
    torch.save(snapshot, tmp)
    os.replace(tmp, target)
    card_file = dest / "README.md"
    card = card_file.read_text() if card_file.is_file() else f"# {config.family}\n"
    card = card.split(f"\n{EXPERT_SECTION}\n")[0].rstrip("\n")
    how = "--portable " if config.portable else ""
    card += (
        f"\n\n{EXPERT_SECTION}\n\n"
        f"`expert_policy.pt`: the final policy of the SAC run in `{config.work_dir}` (seed {config.seed}), SAC step "
        f"{final['step']} "
        f"({final['env_steps']} env steps), normalized score {final['score']:.1f} (deterministic, "
        f"{config.pick_episodes} episodes). Made with `python -m policylab.datasets build {config.family} {how}"
        f"--seed {config.seed} --sac-steps {config.sac_steps} --kinds expert` and `python -m policylab.datasets "
        f"export {config.family} --expert`."
        + (
            " The run was portable: its checkpoints hold no replay buffer (a resume from one refills the buffer "
            "with the current policy first)."
            if config.portable
            else ""
        )
        + f" Regenerate `expert` and `medium-expert` from it:\n\n    python -m policylab.datasets build "
        f"{config.family} --from-bundle --kinds expert medium-expert\n" + (f"\n{note}\n" if note else "")
    )
    _atomic_write_text(card_file, card)
    return target


def dataset_card(config: BuildConfig, picked: dict, stats: dict, max_bytes: int = SHIP_LIMIT_BYTES) -> str:
    """The card of a bundle: how it was made and what it holds."""
    ref_min, ref_max = reference_scores(config.env_id)
    lines = [
        f"# {config.family}: datasets and policies built by policylab's SAC",
        "",
        f"Made with `python -m policylab.datasets build {config.family} --seed {config.seed} "
        f"--sac-steps {config.sac_steps}`"
        f" (then `python -m policylab.datasets export {config.family}`), SAC on gymnasium `{config.env_id}`.",
        f"Normalized scores use the D4RL {config.family} references: REF_MIN {ref_min}, REF_MAX {ref_max}"
        " (`100 * (return - REF_MIN) / (REF_MAX - REF_MIN)`).",
        "",
        "## Policies",
        "",
        f"| file | SAC step | env steps | normalized score (deterministic, {config.pick_episodes} episodes) |",
        "|---|---|---|---|",
    ]
    for role in ("medium", "final"):
        entry = picked[role]
        lines.append(f"| {role}_policy.pt | {entry['step']} | {entry['env_steps']} | {entry['score']:.1f} |")
    lines += [
        "",
        "## Datasets",
        "",
        "| file | transitions | episodes | return mean | std | min | max | normalized mean | size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s, size, shipped in stats.values():
        lines.append(
            f"| {name} | {s['transitions']} | {s['episodes']} | {s['return_mean']:.1f} | {s['return_std']:.1f} | "
            f"{s['return_min']:.1f} | {s['return_max']:.1f} | {s['normalized_score_mean']:.1f} | "
            f"{size / 2**20:.1f} MiB{'' if shipped == 'whole' else f' ({shipped})'} |"
        )
    limit = f"{max_bytes / 10**6:g} MB"
    for kind, (name, s, _, shipped) in stats.items():
        if shipped == "without infos":
            lines += [
                "",
                f"`{name}` is shipped without `infos/qpos` and `infos/qvel` to stay under {limit}; every other array "
                "is as built (a build writes them all).",
            ]
        elif shipped == "without infos and next_observations":
            lines += [
                "",
                f"`{name}` is shipped without `infos/qpos`, `infos/qvel` and `next_observations` to stay under {limit} "
                "(a build writes them all). Loading it follows D4RL's `qlearning_dataset` rule: `s'` is the next row, "
                f"so the rows at timeouts and the last row ({s['dropped_without_next']} in all) are dropped, and a "
                "terminal row's `s'` is the next episode's first state (masked by the terminal in every TD target).",
            ]
        elif shipped == "not shipped":
            lines += [
                "",
                f"`{name}` is over {limit} even without `infos/*`, so it is not shipped: build it (SAC run included) "
                f"into the folder D4RL names are looked up in, and `{config.family}-{kind}-v5` finds it:",
                "",
                f"    python -m policylab.datasets build {config.family} --seed {config.seed} "
                f"--sac-steps {config.sac_steps} --kinds {kind} --out $D4RL_DATASET_DIR",
            ]
    lines += [
        "",
        f"`medium-replay` is every env step of the SAC run up to the medium policy (step {picked['medium']['step']}, "
        f"{picked['medium']['env_steps']} env steps, the first {config.random_steps} with uniform random actions).",
        "",
        "Regenerate "
        + ("`random`, `medium`, `expert` and `medium-expert`" if picked.get("expert") else "`random` and `medium`")
        + " from the policies here:",
        "",
        f"    python -m policylab.datasets build {config.family} --from-bundle --kinds random medium"
        + (" medium-expert" if picked.get("expert") else ""),
        "",
        "Build everything from scratch (SAC run included):",
        "",
        f"    python -m policylab.datasets build {config.family} --seed {config.seed} --sac-steps {config.sac_steps}",
        "",
    ]
    return "\n".join(lines)


def _dataset_attrs(config: BuildConfig, kind: str, picked: dict | None) -> dict:
    ref_min, ref_max = reference_scores(config.env_id)
    attrs = {
        "env_id": config.env_id,
        "kind": kind,
        "seed": config.seed,
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "builder": "policylab.datasets build",
        "config": json.dumps(_config_dict(config)),
    }
    if picked:
        for role in ("medium", "expert"):
            if picked.get(role):
                attrs[f"{role}_policy_step"] = picked[role]["step"]
                attrs[f"{role}_policy_score"] = picked[role]["score"]
    return attrs


def _write_minari_once(config: BuildConfig, kind: str, arrays: dict[str, np.ndarray]) -> None:
    from policylab.datamodules.minari_source import minari_root, write_minari

    dataset_id = config.minari_id(kind)
    folder = Path(minari_root()) / dataset_id
    if folder.is_dir():
        import minari

        steps = minari.load_dataset(dataset_id).total_steps
        if steps != len(arrays["rewards"]):
            raise DatasetError(
                f"Minari dataset {dataset_id} at {folder} holds {steps} steps but the {kind} set has "
                f"{len(arrays['rewards'])}: it comes from another build; move it away to write this one"
            )
        return
    ref_min, ref_max = reference_scores(config.env_id)
    write_minari(
        dataset_id,
        arrays,
        config.env_id,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        description=f"{config.family} {kind}: built by policylab's SAC (seed {config.seed})",
    )


def _config_dict(config: BuildConfig) -> dict:
    out = dict(config.__dict__)
    out["medium_range"], out["kinds"] = list(config.medium_range), list(config.kinds)
    return out


_AFFECTS_TRAINING = ("family", "seed", "random_steps", "eval_every", "eval_episodes")


def _check_config(config: BuildConfig) -> None:
    """Refuse to resume a build whose SAC run was made with other settings. A run may go on as
    portable (its next checkpoints drop the buffer and the recording), never back."""
    saved_file = Path(config.work_dir) / "build.json"
    current = _config_dict(config)
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        default = _config_dict(BuildConfig())  # a key an older build.json lacks had its default
        changed = [k for k in _AFFECTS_TRAINING if saved.get(k, default[k]) != current[k]]
        if changed:
            listing = ", ".join(f"{k}: {saved.get(k)} -> {current[k]}" for k in changed)
            raise DatasetError(
                f"{config.work_dir} holds a build made with other settings ({listing}); "
                "use another --work-dir or the same settings"
            )
        if saved.get("portable", False) and not config.portable:
            raise DatasetError(
                f"{config.work_dir} holds a portable build (its checkpoints keep no buffer or recording): "
                "pass --portable to go on with it"
            )
    _atomic_write_text(saved_file, json.dumps(current, indent=2))


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
