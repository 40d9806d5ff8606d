"""The training loop: a run built from a config, trained epoch by epoch with pruning steps."""
