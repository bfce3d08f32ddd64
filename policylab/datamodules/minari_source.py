"""Minari datasets (Farama's successor of D4RL) read into D4RL-style arrays."""

from __future__ import annotations

import os

import numpy as np

from policylab.datamodules.d4rl_format import DatasetError


def minari_root() -> str:
    return os.environ.get("MINARI_DATASETS_PATH", os.path.expanduser("~/.minari/datasets"))


def read_minari(dataset_id: str, download: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Load a Minari dataset from disk (downloading only when ``download``) as flat arrays.

    Episodes store T+1 observations; transitions take ``next_observations = obs[1:]``,
    ``terminals = terminations`` and ``timeouts = truncations``. Returns ``(arrays, info)`` with
    ``info`` holding ``env_id``, ``ref_min_score`` and ``ref_max_score`` when the dataset has them.
    """
    import minari

    try:
        dataset = minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError as err:
        raise DatasetError(
            f"Minari dataset {dataset_id!r} is not on disk under MINARI_DATASETS_PATH={minari_root()}; "
            "set download=True (data.init_args.download) to fetch it, or check the id"
        ) from err
    except Exception as err:  # network errors, unknown remote ids, bad metadata
        raise DatasetError(f"cannot load Minari dataset {dataset_id!r}: {type(err).__name__}: {err}") from err

    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts")
    }
    for episode in dataset.iterate_episodes():
        obs = np.asarray(episode.observations)
        if not isinstance(episode.observations, np.ndarray) or obs.ndim != 2:
            raise DatasetError(f"Minari dataset {dataset_id!r}: only flat Box observations are supported")
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(episode.actions))
        parts["rewards"].append(np.asarray(episode.rewards))
        parts["terminals"].append(np.asarray(episode.terminations))
        parts["timeouts"].append(np.asarray(episode.truncations))
    if not parts["observations"]:
        raise DatasetError(f"Minari dataset {dataset_id!r} holds no episodes")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}

    metadata = dataset.storage.metadata
    info = {k: metadata[k] for k in ("ref_min_score", "ref_max_score") if metadata.get(k) is not None}
    env_spec = dataset.env_spec
    if env_spec is not None:
        info["env_id"] = env_spec.id
    return arrays, info


def write_minari(
    dataset_id: str,
    arrays: dict[str, np.ndarray],
    env_id: str,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    **metadata,
):
    """Write D4RL-layout arrays (with ``next_observations``) as a Minari dataset with Minari's own
    ``create_dataset_from_buffers``; episodes end at terminals and timeouts."""
    from minari import create_dataset_from_buffers
    from minari.data_collector.episode_buffer import EpisodeBuffer

    if "next_observations" not in arrays:
        raise DatasetError("write_minari needs 'next_observations' to close each episode")
    terminals = np.asarray(arrays["terminals"], bool)
    timeouts = np.asarray(arrays.get("timeouts", np.zeros_like(terminals)), bool)
    ends = np.flatnonzero(terminals | timeouts)
    if len(ends) == 0 or ends[-1] != len(terminals) - 1:
        ends = np.append(ends, len(terminals) - 1)
    buffers, start = [], 0
    for episode_id, end in enumerate(ends):
        steps = slice(start, end + 1)
        observations = np.concatenate([arrays["observations"][steps], arrays["next_observations"][end : end + 1]])
        buffers.append(
            EpisodeBuffer(
                id=episode_id,
                observations=observations.astype(np.float32),
                actions=np.asarray(arrays["actions"][steps], dtype=np.float32),
                rewards=np.asarray(arrays["rewards"][steps], dtype=np.float64).tolist(),
                terminations=terminals[steps].tolist(),
                truncations=timeouts[steps].tolist(),
                infos={},
            )
        )
        start = end + 1
    metadata.setdefault("algorithm_name", "policylab")
    metadata.setdefault("description", f"{dataset_id}: written by policylab from D4RL-layout arrays")
    metadata.setdefault("eval_env", env_id)
    return create_dataset_from_buffers(
        dataset_id, buffers, env=env_id, ref_min_score=ref_min_score, ref_max_score=ref_max_score, **metadata
    )
