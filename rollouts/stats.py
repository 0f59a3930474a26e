"""The sequential test: mixture sequential probability ratio tests (mSPRT) on approximately
normal estimates, which give always-valid p-values and confidence sequences.

An estimate ``d`` of a difference ``θ`` with variance ``v`` (from the counts seen so far) is
tested against ``H0: θ = θ0`` with a normal mixture ``θ ~ N(θ0, τ²)`` over the alternatives.
The likelihood ratio of the mixture is

    Λ = sqrt(v / (v + τ²)) · exp(τ² (d − θ0)² / (2 v (v + τ²)))

and, since it is a nonnegative martingale under H0, ``P(Λ ever ≥ 1/α) ≤ α`` (Ville's
inequality): the test may be looked at after every new batch of requests, as often as one
likes, and stopped at the first look that decides, without inflating its error rate. That is
what lets a canary be analysed every minute and a quiet hour simply hold.

Inverting the test gives a confidence sequence: every ``θ`` with ``|d − θ| ≤ r(v)`` where

    r(v)² = 2 v (v + τ²) / τ² · (log(1/α) + ½ log((v + τ²) / v)).

References: Robbins (1970); Johari, Pekelis, Walsh, "Always valid inference: bringing
sequential analysis to A/B testing" (2015, arXiv:1512.04922).
"""

from __future__ import annotations

import math


def log_lambda(d: float, v: float, theta0: float, tau: float) -> float:
    """log Λ of the mixture likelihood ratio of ``H0: θ = θ0``."""
    v = max(v, 1e-300)
    tau2 = tau * tau
    return 0.5 * math.log(v / (v + tau2)) + tau2 * (d - theta0) ** 2 / (2 * v * (v + tau2))


def p_value(d: float, v: float, theta0: float, tau: float) -> float:
    """Always-valid one-sided p-value for ``θ > θ0`` (the canary is worse than allowed): 1
    when the estimate is on the allowed side."""
    if d <= theta0:
        return 1.0
    return min(1.0, math.exp(-log_lambda(d, v, theta0, tau)))


def radius(v: float, tau: float, alpha: float) -> float:
    """Half-width of the always-valid ``1 − α`` confidence sequence at variance ``v``."""
    v = max(v, 1e-300)
    tau2 = tau * tau
    return math.sqrt(
        2 * v * (v + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log((v + tau2) / v))
    )


def verdict(d: float, v: float, theta0: float, tau: float, alpha: float) -> str:
    """``fail`` when the whole confidence sequence is above ``θ0`` (worse than allowed),
    ``pass`` when it is wholly below, ``inconclusive`` otherwise."""
    r = radius(v, tau, alpha)
    if d - r > theta0:
        return "fail"
    if d + r < theta0:
        return "pass"
    return "inconclusive"
