"""The notebooks' companions: explorations, Bayes-factor comparisons, theory checks, lottery tickets,
magnitude against the posterior saliency."""
