"""LightningModules, one file per method, grouped by family."""
