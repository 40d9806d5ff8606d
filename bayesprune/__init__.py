"""bayesprune: Bayes-factor-gated neural network pruning, for teaching and research.

    import bayesprune as bp
    res = bp.train(bp.RunConfig(dataset="digits", method="bayes-magnitude", sparsity=0.9))
"""

from .analysis import stats
from .analysis.plots import plot_curves
from .analysis.report import (
    format_table1,
    paper_table1,
    plot_accuracy_vs_sparsity,
    plot_test_curves,
    summarize,
    write_report,
)
from .analysis.sensitivity import plot_sensitivity, prune_layers, sensitivity_scan, suggest_sparsities
from .bayes.posterior import (
    PosteriorRatio,
    PosteriorTerms,
    bf_subset,
    gate_allows_pruning,
    gate_keeps_candidate,
    log_bayes_factor,
    log_likelihood,
    log_prior,
    posterior_terms,
)
from .core.config import BOUNDS, CHOICES, METHODS, PAPER_METHODS, RunConfig
from .core.data import DataFileError, DatasetNotFoundError, TensorDataset, load_dataset, read_idx
from .core.export import compress, export_sparse, load_sparse
from .core.models import CNN, FCN, build_model, initial_model
from .core.pruning import (
    STRATEGIES,
    Mask,
    apply_mask,
    compute_mask,
    count_weights,
    layer_sparsity,
    magnitude_mask,
    neuron_mask,
    prunable_parameters,
    prune_magnitude,
    prune_neurons,
    prune_random,
    random_mask,
    remove_torch_prune,
    sparsity,
    to_torch_prune,
)
from .core.schedule import PruningSchedule
from .core.sparse_models import linear_flops, shrink_fcn, to_csr
from .engine.training import (
    HISTORY_COLUMNS,
    RunResult,
    StopTraining,
    TrainingDiverged,
    TrainingInterrupted,
    evaluate,
    gate_state,
    prune_step,
    retrain,
    train,
)
from .lab import theory, tickets
from .lab.explore import bf_scan, bf_terms, pruned_copy, sigma_crossover, weight_values
from .runs.results import histories_table, load_runs, results_table
from .runs.runio import OutputError, RunFolder, save_run
from .runs.sweeps import grid, sweep
from .ui import widgets

__version__ = "0.2.0"

__all__ = [
    "BOUNDS", "CHOICES", "CNN", "DataFileError", "DatasetNotFoundError", "FCN", "HISTORY_COLUMNS", "METHODS", "Mask", "OutputError",
    "PAPER_METHODS", "PosteriorRatio", "PosteriorTerms", "PruningSchedule", "RunConfig", "RunFolder", "RunResult",
    "STRATEGIES", "StopTraining", "TensorDataset", "TrainingDiverged", "TrainingInterrupted", "apply_mask",
    "bf_scan", "bf_subset", "bf_terms", "build_model", "compute_mask", "count_weights", "evaluate",
    "format_table1", "gate_allows_pruning", "gate_state", "gate_keeps_candidate", "grid", "histories_table", "initial_model",
    "layer_sparsity", "load_dataset", "load_runs", "log_bayes_factor", "log_likelihood", "log_prior",
    "magnitude_mask", "neuron_mask", "paper_table1", "plot_accuracy_vs_sparsity", "plot_curves", "plot_test_curves",
    "posterior_terms", "prunable_parameters", "prune_magnitude", "prune_neurons", "prune_random", "prune_step",
    "pruned_copy", "random_mask", "read_idx", "remove_torch_prune", "results_table", "retrain", "save_run",
    "sigma_crossover", "sparsity", "stats", "summarize", "sweep", "theory", "tickets", "to_torch_prune", "train",
    "weight_values", "widgets", "write_report",
    "compress", "export_sparse", "load_sparse", "linear_flops", "shrink_fcn", "to_csr",
    "plot_sensitivity", "prune_layers", "sensitivity_scan", "suggest_sparsities",
]
