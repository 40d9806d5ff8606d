"""The Bayes factor: the paper's posterior ratio, the Laplace evidence, the gates."""

from . import laplace_gate, posterior  # noqa: F401  (they register the gates and Bayes factors)
