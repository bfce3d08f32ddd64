"""APO's extrapolation step: He, Yuan and Gu, "Accelerated Preference Optimization for Large
Language Model Alignment" (2024, arXiv:2410.06293).

Iterative preference optimization (iterative DPO, SPPO) is a proximal point method: iteration ``t``
fits ``pi_{t+1} = argmin_pi L(pi; pi_hat_t)``, a preference loss whose KL anchor (the DPO reference)
is ``pi_hat_t``. APO adds Nesterov's extrapolation between iterations,

    pi_hat_{t+1}(y | x)  ∝  pi_{t+1}(y | x) * (pi_{t+1}(y | x) / pi_t(y | x))^alpha,

i.e. ``log pi_hat_{t+1} = log pi_{t+1} + alpha (log pi_{t+1} - log pi_t) + const``, the next
reference (and sampler), with ``alpha = 0`` giving back iterative DPO. A language model's weights
``theta`` parametrize ``log pi``; here the step is taken on them, ``theta_hat_{t+1} = theta_{t+1} +
alpha (theta_{t+1} - theta_t)`` (exact when ``log pi`` is linear in ``theta``, as for a tabular
softmax policy, and giving one model that can both sample and serve as the reference).
"""

from __future__ import annotations

from torch import Tensor


def nesterov_extrapolation(current: Tensor, previous: Tensor, alpha: float) -> Tensor:
    """``current + alpha * (current - previous)``: Nesterov's look-ahead point from the last two
    iterates (APO's extrapolation step, on log-probabilities or on the weights that give them)."""
    return current + alpha * (current - previous)
