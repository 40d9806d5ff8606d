"""bayesprune: Bayes-factor-gated neural network pruning, for teaching and research.

    import bayesprune as bp
    res = bp.train(bp.RunConfig(dataset="digits", method="bayes-magnitude", sparsity=0.9))

The names here are the ones a user calls; everything else is importable from its
subpackage (``bayesprune.core``, ``bayes``, ``engine``, ``runs``, ``analysis``, ``lab``, ``ui``).
"""

from .analysis import stats
from .analysis.decisions import decision_story, gate_decisions
from .analysis.report import (
    format_table1,
    paper_table1,
    plot_accuracy_vs_sparsity,
    plot_test_curves,
    table1,
    write_report,
)
from .analysis.sensitivity import plot_sensitivity, prune_layers, sensitivity_scan, suggest_sparsities
from .bayes.posterior import (
    PosteriorTerms,
    bf_subset,
    log_bayes_factor,
    log_likelihood,
    log_prior,
    posterior_terms,
)
from .core.config import BOUNDS, CHOICES, PAPER_METHODS, RunConfig
from .core.criteria import (
    ScoreContext,
    compute_mask,
    magnitude_mask,
    mask_from_scores,
    neuron_mask,
    prune_magnitude,
    prune_neurons,
    prune_random,
    random_mask,
)
from .core.data import DatasetNotFoundError, TensorDataset, load_dataset
from .core.export import compress, export_sparse, load_sparse
from .core.models import CNN, FCN, build_model, initial_model
from .core.pruning import (
    Mask,
    apply_mask,
    count_weights,
    layer_sparsity,
    prunable_parameters,
    remove_torch_prune,
    sparsity,
    to_torch_prune,
)
from .core.registry import BAYES_FACTORS, CRITERIA, DATASETS, GATES, MODELS, methods
from .core.schedule import PruningSchedule
from .core.sparse_models import linear_flops, shrink_fcn, to_csr
from .engine.training import (
    EpochCallback,
    RunResult,
    StopTraining,
    TrainingDiverged,
    TrainingInterrupted,
    build_run,
    evaluate,
    gate_state,
    prune_step,
    retrain,
    train,
)
from .lab import theory, tickets
from .lab.explore import bf_scan, bf_terms, pruned_copy, sigma_crossover, weight_values
from .runs.plots import plot_curves
from .runs.results import histories_table, load_runs, results_table
from .runs.runio import save_run
from .runs.sweeps import grid, sweep
from .ui import widgets

__version__ = "0.2.0"

__all__ = [
    # a run
    "RunConfig", "train", "RunResult", "StopTraining", "TrainingDiverged", "TrainingInterrupted", "EpochCallback",
    "build_run", "save_run", "plot_curves", "gate_decisions", "decision_story", "CHOICES", "BOUNDS", "PAPER_METHODS", "methods",
    # extension points
    "CRITERIA", "GATES", "BAYES_FACTORS", "MODELS", "DATASETS", "ScoreContext", "mask_from_scores",
    # sweeps and Table 1
    "sweep", "grid", "load_runs", "results_table", "histories_table", "table1", "format_table1", "paper_table1",
    "write_report", "plot_accuracy_vs_sparsity", "plot_test_curves", "stats",
    # masks and pruning by hand
    "Mask", "compute_mask", "apply_mask", "prune_magnitude", "prune_random", "prune_neurons", "magnitude_mask",
    "random_mask", "neuron_mask", "prunable_parameters", "sparsity", "layer_sparsity", "count_weights",
    "to_torch_prune", "remove_torch_prune", "PruningSchedule",
    # models, data, training by hand
    "load_dataset", "DatasetNotFoundError", "TensorDataset", "FCN", "CNN", "build_model", "initial_model", "evaluate", "retrain",
    "prune_step", "gate_state",
    # the Bayes factor by hand
    "PosteriorTerms", "posterior_terms", "log_likelihood", "log_prior", "log_bayes_factor", "bf_subset",
    "bf_terms", "bf_scan", "pruned_copy", "sigma_crossover", "weight_values",
    # the notebooks' companions and widgets
    "theory", "tickets", "widgets",
    # what pruning buys: sparse export, smaller models, the per-layer sensitivity scan
    "compress", "export_sparse", "load_sparse", "linear_flops", "shrink_fcn", "to_csr",
    "plot_sensitivity", "prune_layers", "sensitivity_scan", "suggest_sparsities",
]
