"""Keeping runs: atomic files, run folders, run records, sweeps and their worker pool."""
