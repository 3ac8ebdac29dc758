"""Quality metrics and baselines."""
