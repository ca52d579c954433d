"""Layer 3: the engine — objectives, ``fit``, exact inference, learning, likelihood estimators."""

from probgen.infer.exact import log_prob, map_query, query, query_batch
from probgen.infer.fit import FitResult, NonFiniteLossError, fit
from probgen.infer.learn import BayesNetFit, fit_bayesnet
from probgen.infer.likelihood import (
    LogLikelihood,
    elbo_nll,
    evaluate_nll,
    exact_nll,
    importance_nll,
)
from probgen.infer.objectives import (
    ELBO,
    IWAE,
    BetaELBO,
    Likelihood,
    Objective,
    PyroELBO,
    resolve_objective,
)
from probgen.infer.runs import RunFolderError, load_checkpoint, load_run_weights, read_history
from probgen.infer.sampling import sample_bayesnet

__all__ = [
    "fit", "FitResult", "NonFiniteLossError",
    "Objective", "ELBO", "BetaELBO", "IWAE", "Likelihood", "PyroELBO", "resolve_objective",
    "LogLikelihood", "exact_nll", "importance_nll", "elbo_nll", "evaluate_nll",
    "RunFolderError", "load_run_weights", "load_checkpoint", "read_history",
    "query", "query_batch", "map_query", "log_prob",
    "fit_bayesnet", "BayesNetFit", "sample_bayesnet",
]
