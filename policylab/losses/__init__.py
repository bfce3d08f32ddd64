"""The math of each method as pure functions of tensors: no state, no I/O."""

from policylab.losses.a2pr import a2pr_value_target, advantage_filtered_vae_loss, advantage_guided_bc_loss
from policylab.losses.apo import nesterov_extrapolation
from policylab.losses.bc import bc_mse_loss, weighted_bc_loss
from policylab.losses.cdsa import cdsa_adjust_action, denoise, denoising_score_matching_loss, geometric_noise_levels
from policylab.losses.diffusion import (
    denoising_error,
    diffusion_dpo_loss,
    diffusion_dpo_margin,
    diffusion_dro_loss,
    implicit_accuracy,
    pseudo_huber,
)
from policylab.losses.egpo import online_ipo_loss, variance_reduced_preferences
from policylab.losses.famo2o import balance_model_loss, balance_temperature_loss, universal_actor_loss
from policylab.losses.hypo import leave_one_out_baseline, rloo_kl_surrogate
from policylab.losses.inpo import inpo_h, inpo_loss
from policylab.losses.iql import awr_actor_loss, awr_weights, expectile_loss, iql_q_target
from policylab.losses.nash_md import nash_md_loss
from policylab.losses.pairwise import PAIRWISE_LOSSES, PairStats, PairwiseLoss, get_pairwise_loss
from policylab.losses.prdc import dataset_constraint_key, dataset_constraint_loss, prdc_actor_loss
from policylab.losses.preference import (
    apo_zero_loss,
    bco_pair_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    ipo_loss,
    log_ratios,
    nca_loss,
    robust_dpo_loss,
    rpo_loss,
    sem_dpo_loss,
    semantic_weight,
    simpo_loss,
    sppo_loss,
)
from policylab.losses.reward import (
    bradley_terry_loss,
    general_preference_loss,
    general_preference_score,
)
from policylab.losses.ro2o import (
    decayed_uncertainty_weight,
    ood_uncertainty_loss,
    perturbed_states,
    policy_smoothness_loss,
    q_smoothness_loss,
    symmetric_gaussian_kl,
    uniform_perturbations,
    worst_copies,
)
from policylab.losses.sac import (
    gaussian_log_density,
    sac_actor_loss,
    sac_critic_target,
    sac_temperature_loss,
    squashed_gaussian_log_prob,
)
from policylab.losses.srpo import srpo_loss, srpo_terms
from policylab.losses.td3 import (
    clipped_double_q_target,
    ensemble_mse_loss,
    smoothed_target_action,
    td3_critic_target,
)
from policylab.losses.td3bc import q_scale, td3bc_actor_loss
from policylab.losses.vpo import value_regularizer, vpo_loss
from policylab.losses.xpo import xpo_loss

__all__ = [
    "nesterov_extrapolation",
    "cdsa_adjust_action",
    "denoise",
    "denoising_score_matching_loss",
    "geometric_noise_levels",
    "online_ipo_loss",
    "variance_reduced_preferences",
    "balance_model_loss",
    "balance_temperature_loss",
    "universal_actor_loss",
    "leave_one_out_baseline",
    "rloo_kl_surrogate",
    "inpo_h",
    "inpo_loss",
    "nash_md_loss",
    "srpo_loss",
    "srpo_terms",
    "value_regularizer",
    "vpo_loss",
    "xpo_loss",
    "PAIRWISE_LOSSES",
    "PairStats",
    "PairwiseLoss",
    "a2pr_value_target",
    "advantage_filtered_vae_loss",
    "advantage_guided_bc_loss",
    "apo_zero_loss",
    "awr_actor_loss",
    "awr_weights",
    "bc_mse_loss",
    "bco_pair_loss",
    "bradley_terry_loss",
    "clipped_double_q_target",
    "dataset_constraint_key",
    "dataset_constraint_loss",
    "denoising_error",
    "diffusion_dpo_loss",
    "diffusion_dpo_margin",
    "diffusion_dro_loss",
    "dpo_loss",
    "ensemble_mse_loss",
    "exo_pair_loss",
    "expectile_loss",
    "gaussian_log_density",
    "general_preference_loss",
    "general_preference_score",
    "get_pairwise_loss",
    "hinge_loss",
    "implicit_accuracy",
    "ipo_loss",
    "iql_q_target",
    "log_ratios",
    "nca_loss",
    "prdc_actor_loss",
    "pseudo_huber",
    "q_scale",
    "robust_dpo_loss",
    "rpo_loss",
    "sac_actor_loss",
    "sac_critic_target",
    "sac_temperature_loss",
    "sem_dpo_loss",
    "semantic_weight",
    "simpo_loss",
    "smoothed_target_action",
    "sppo_loss",
    "squashed_gaussian_log_prob",
    "td3_critic_target",
    "td3bc_actor_loss",
    "weighted_bc_loss",
    "decayed_uncertainty_weight",
    "ood_uncertainty_loss",
    "perturbed_states",
    "policy_smoothness_loss",
    "q_smoothness_loss",
    "worst_copies",
    "symmetric_gaussian_kl",
    "uniform_perturbations",
]
