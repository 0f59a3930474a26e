"""SLO specs to Prometheus rules, evaluator, backtest and correlation (not built yet)."""

__all__: list[str] = []
