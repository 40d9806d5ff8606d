"""The bottom layer: config, registries, masks and criteria, schedule, models, data."""

from . import criteria, data, models  # noqa: F401  (they register the criteria, data sets and models)
