"""The pruning problem itself: the run config, masks and criteria, the schedule, the models, the data."""
