"""Cost-aware canary rollouts: analysis of a canary against its baseline (latency distributions,
error and rejection ratios, cost per token) and a controller that steps route weights."""

if __name__ != "gpuslo.rollouts":  # the folder is gpuslo.rollouts; one module, one name
    raise ImportError(
        "import gpuslo.rollouts, not rollouts: this folder is part of the gpuslo package"
    )
