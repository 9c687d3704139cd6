"""Judging explanations: axioms, sanity checks, faithfulness, robustness, localisation, complexity.

Plain, batched functions that return one value per example (a ``(B,)`` tensor) unless they
return a curve or a table. The chapters: 9 (axioms, sanity checks), 10 (faithfulness,
complexity), 11 (localisation), 12 (robustness of explanations; 13: the alignment of input and
gradient), 14 (the uncertainty of maps), 20 (the report card).

One argument order, by what a metric judges:

* a map: ``metric(model, x, attr, target, *, settings)``, a method's own call with the map put in
  before the target (deletion, insertion, AOPC, infidelity, sensitivity-n, EvalAttAI, completeness);
* a method, which the metric calls again on changed inputs or models:
  ``metric(method, model, x, target, *, settings)``, the method in front of its own call
  (max-sensitivity, local Lipschitz, input invariance, sensitivity(a), ROAR);
* maps alone: ``metric(attr)``, ``metric(attr, mask)``, ``similarity(a, b)``;
* several methods at once, as a table: ``metric(model, x, target, methods)``
  (model and data randomisation, :func:`evaluate`).

Removals and baselines take the vocabulary of :mod:`xaiutils.core.baselines`; for token ids
``(B, T)`` the perturbation metrics remove words instead, replaced by ``"pad"``, ``"mask"`` or a
token id (:mod:`._tokens`, :data:`TOKEN_SETTINGS`; chapter 16).
"""
from .axioms import (completeness, dummy, implementation_invariance, input_invariance, rescaled_copy,
                     sensitivity_a, shifted_copy)
from .complexity import entropy, sparseness
from .curves import Curve, aopc, deletion, evalattai, feature_ranks, insertion, perturbation_curve, pixel_flipping
from .faithfulness import faithfulness_correlation, infidelity, perturbations, sensitivity_n
from .localisation import auc, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from .report import (METRICS, TOKEN_SETTINGS, Metric, available_methods, bootstrap_ci, evaluate, plot_report, random_map,
                     rank_agreement)
from .retraining import roar
from .robustness import (alignment, avg_sensitivity, local_lipschitz, max_sensitivity, noise,
                         relative_input_stability)
from .sanity import (data_randomisation, learnable_layers, model_randomisation, reinitialise,
                     train_random_labels)
from .similarity import (AGREEMENTS, SIMILARITIES, center_of_mass, center_of_mass_shift, cosine_similarity, spearman,
                         ssim, top_k_agreement, top_k_intersection)

__all__ = [
    "completeness", "dummy", "implementation_invariance", "input_invariance", "rescaled_copy", "sensitivity_a",
    "shifted_copy", "entropy", "sparseness", "Curve", "aopc", "deletion", "evalattai",
    "faithfulness_correlation", "feature_ranks", "infidelity", "insertion", "perturbation_curve", "perturbations",
    "pixel_flipping", "sensitivity_n", "auc", "pointing_game", "relevance_mass_accuracy",
    "relevance_rank_accuracy", "METRICS", "TOKEN_SETTINGS", "Metric", "available_methods", "bootstrap_ci", "evaluate",
    "plot_report", "random_map", "rank_agreement", "roar", "alignment", "avg_sensitivity", "local_lipschitz",
    "max_sensitivity", "noise",
    "relative_input_stability", "data_randomisation", "learnable_layers", "model_randomisation", "reinitialise",
    "train_random_labels", "SIMILARITIES", "center_of_mass", "center_of_mass_shift", "cosine_similarity",
    "spearman", "ssim", "top_k_intersection", "AGREEMENTS", "top_k_agreement",
]
