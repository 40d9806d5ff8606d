"""The Bayes factor: the paper's posterior ratio, the Laplace evidence, the gates."""

from . import laplace_gate, obs, posterior  # noqa: F401  (they register the gates, Bayes factors, obs criterion)
