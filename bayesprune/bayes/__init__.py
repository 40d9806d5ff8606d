"""Deciding whether to prune: the posterior terms, the gates and the Laplace evidence."""
