"""PRDC: Ran, Li, Zhang, Zhang, Yu, "Policy Regularization with Dataset Constraint for Offline
Reinforcement Learning", ICML 2023 (https://arxiv.org/abs/2306.06569; authors' code LAMDA-RL/PRDC).

TD3+BC whose behaviour-cloning target is not the batch's own action: for each state ``s`` the
policy's ``pi(s)`` is pulled towards the action of the dataset pair nearest to
``(beta s) (+) pi(s)`` in the joint (normalized state, action) space, searched over the whole
dataset (exact, k = 1), so the policy may pick actions the data shows in *nearby* states.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.prdc import dataset_constraint_key, prdc_actor_loss
from policylab.modules.base import no_param_grads
from policylab.modules.offline.td3bc import TD3BC
from policylab.nn.neighbors import ExactNeighbors, KDTreeNeighbors, NeighborSearchKind, neighbor_search, scipy_available


class PRDC(TD3BC):
    """PRDC with the authors' defaults (``LAMDA-RL/PRDC``: ``prdc.py``, ``utils/config.py``,
    README): TD3 (lr 3e-4, tau 0.005, discount 0.99, target noise 0.2 clipped at 0.5, both in
    units of ``max_action``, actor every 2 steps, 256-256 actor and twin critics), ``alpha 2.5``
    (HalfCheetah: 40), ``beta 2``, one neighbour. Observations are standardized by the
    datamodule (mean, ``std + 1e-3``) before the keys are built, as the authors do.

    The key set ``(beta s^) (+) a^`` is built once from the datamodule's offline rows when
    ``fit`` sets up (or by :meth:`set_dataset`); it is not saved in checkpoints.

    ``neighbor_search``: ``"kdtree"`` (the authors' scipy KD-tree, on the CPU: on a GPU every
    actor step copies the query keys to the host and waits for the indices, and
    ``cuda_graph=True`` is refused) or ``"exact"`` (chunked brute force on the training device,
    no host sync). Both return the same neighbour (:mod:`policylab.nn.neighbors`);
    ``neighbor_chunk_size`` and ``neighbor_candidates`` tune the exact search. On a CPU the
    KD-tree is the faster one (``benchmarks/neighbor_search.py``).

    Not carried over from the authors' code: their argparse default ``beta = 1.0`` (their README
    and class default use 2) and ``k > 1`` (their ``query(k=[k])`` returns only the k-th
    neighbour; every published run uses ``k = 1``).
    """

    compiled_losses = ("critic_loss",)  # the actor loss searches the dataset (on the host with the KD-tree)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        alpha: float = 2.5,
        beta: float = 2.0,
        neighbor_search: NeighborSearchKind = "kdtree",
        neighbor_chunk_size: int = 65536,
        neighbor_candidates: int = 8,
        discount: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        actor_hidden_dims: Sequence[int] = (256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        if neighbor_search not in ("kdtree", "exact"):
            raise ValueError(f"PRDC: neighbor_search must be 'kdtree' or 'exact', got {neighbor_search!r}")
        if neighbor_search == "kdtree" and cuda_graph:
            raise ValueError(
                "PRDC: the KD-tree search runs on the host and cannot be part of a CUDA graph; "
                "use neighbor_search='exact' (same neighbours, on the device) with cuda_graph=True"
            )
        if neighbor_search == "kdtree" and not scipy_available():
            raise ImportError(
                "PRDC: neighbor_search='kdtree' needs scipy (pip install scipy); "
                "neighbor_search='exact' finds the same neighbours without it"
            )
        super().__init__(
            obs_dim,
            action_dim,
            max_action,
            alpha=alpha,
            discount=discount,
            tau=tau,
            policy_noise=policy_noise,
            noise_clip=noise_clip,
            policy_freq=policy_freq,
            actor_lr=actor_lr,
            critic_lr=critic_lr,
            actor_hidden_dims=actor_hidden_dims,
            critic_hidden_dims=critic_hidden_dims,
            compile=compile,
            compile_mode=compile_mode,
            cuda_graph=cuda_graph,
        )
        self.action_dim = action_dim
        # The dataset (not a buffer: DDP would broadcast it, checkpoints would hold it).
        self._index: KDTreeNeighbors | ExactNeighbors | None = None
        self._keys: Tensor | None = None  # [N, obs_dim + action_dim] on the training device

    # ----------------------------------------------------------------- the dataset constraint's key set
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            buffer = getattr(self.trainer.datamodule, "buffer", None)
            if buffer is None or not hasattr(buffer, "initial_size"):
                raise TypeError("PRDC needs a datamodule with a transition buffer (an offline dataset) to search")
            offline = buffer.all()
            n = buffer.initial_size
            self.set_dataset(offline.obs[:n], offline.action[:n])

    def on_train_start(self) -> None:
        super().on_train_start()
        if self._index is not None:  # the key set moves to the training device before any step (or graph)
            self._place_keys(self.device)

    def _place_keys(self, device: torch.device) -> None:
        self._index.to(device)
        self._keys = self._index.keys if self._index.keys.device == device else self._keys.to(device)

    def set_dataset(self, obs: Tensor, action: Tensor) -> None:
        """Build the search over ``(beta s^) (+) a^`` for the dataset's (normalized) states and
        actions: every transition, as the authors' ``np.hstack([beta * states, actions])``."""
        obs, action = torch.as_tensor(obs).float(), torch.as_tensor(action).float()
        if obs.ndim != 2 or action.ndim != 2 or obs.shape[0] != action.shape[0] or obs.shape[0] == 0:
            raise ValueError(
                f"PRDC.set_dataset needs [N, obs_dim] states and [N, action_dim] actions, "
                f"got {tuple(obs.shape)} and {tuple(action.shape)}"
            )
        hp = self.hparams
        keys = dataset_constraint_key(obs.detach().cpu(), action.detach().cpu(), hp.beta)
        self._index = neighbor_search(hp.neighbor_search, keys, hp.neighbor_chunk_size, hp.neighbor_candidates)
        self._keys = self._index.keys

    def nearest_dataset_action(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """The action ``a^`` of the dataset pair nearest to ``(beta s) (+) a`` (no gradient) and the
        distance to that pair ``d_beta(s, a)``, ``[B]``."""
        if self._index is None:
            raise RuntimeError(
                "PRDC has no dataset to search: fit it with an offline datamodule or call set_dataset(obs, action)"
            )
        device = action.device
        if self._keys.device != device:  # outside fit (validate, test, a direct call)
            self._place_keys(device)
        key = dataset_constraint_key(obs, action, self.hparams.beta).detach()
        neighbor = self._keys[self._index.query(key)]
        return neighbor[:, -self.action_dim :], (neighbor - key).norm(dim=1)

    # ----------------------------------------------------------------- losses
    def actor_loss(self, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """PRDC's actor loss; returns (loss, its terms to log: lambda, the dataset-constraint term,
        ``d_beta(s, pi(s))``). The rest of the step is TD3+BC's."""
        pi = self.actor(batch.obs)
        with no_param_grads(self.critic):
            q_pi = self.critic(batch.obs, pi, members=1)[0]
        neighbor_action, distance = self.nearest_dataset_action(batch.obs, pi)
        loss, lam, constraint = prdc_actor_loss(q_pi, pi, neighbor_action, self.hparams.alpha)
        return loss, {"lambda": lam, "dc_loss": constraint, "neighbor_distance": distance.mean()}

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """TD3+BC's diagnostics and the policy's distance to the dataset ``d_beta(s, pi(s))`` when
        the key set is built."""
        out = super().diagnostics(batch)
        if self._index is not None:
            out["neighbor_distance"] = self.nearest_dataset_action(batch.obs, self.actor(batch.obs))[1].mean()
        return out
