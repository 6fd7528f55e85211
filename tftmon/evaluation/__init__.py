"""Honest accuracy: backtests of the model against plain baselines, metrics, incident warnings, reports."""
