"""bayesprune: Bayes-factor-gated neural network pruning, for teaching and research.

    import bayesprune as bp
    res = bp.train(bp.RunConfig(dataset="digits", method="bayes-magnitude", sparsity=0.9))
"""

from .bayes import (
    PosteriorTerms,
    bf_subset,
    gate_allows_pruning,
    gate_keeps_candidate,
    log_bayes_factor,
    log_likelihood,
    log_prior,
    posterior_terms,
)
from .config import CHOICES, BOUNDS, RunConfig
from .data import DatasetNotFoundError, TensorDataset, load_dataset, read_idx
from .explore import bf_scan, bf_terms, pruned_copy, sigma_crossover, weight_values
from .models import CNN, FCN, build_model
from .plots import plot_curves
from .pruning import (
    STRATEGIES,
    Mask,
    apply_mask,
    compute_mask,
    count_weights,
    layer_sparsity,
    magnitude_mask,
    neuron_mask,
    prune_neurons,
    prunable_parameters,
    prune_magnitude,
    prune_random,
    random_mask,
    remove_torch_prune,
    sparsity,
    to_torch_prune,
)
from .report import format_table1, paper_table1, plot_accuracy_vs_sparsity, plot_test_curves, summarize, write_report
from .sweep import grid, histories_table, load_runs, results_table, sweep
from . import theory, tickets, widgets
from .training import HISTORY_COLUMNS, RunResult, TrainingDiverged, evaluate, retrain, train

__version__ = "0.1.0"
