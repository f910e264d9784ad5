"""mtbench: benchmark transfer, meta and joint few-shot learners under one protocol."""
from __future__ import annotations

__version__ = "0.1.0"

from .algorithm import Algorithm, EmbeddedPredictor, FitData, Predictor, Tags, Target
from .context import RunContext
from .data import Dataset, DatasetSplits, LabeledImages
from .episode import Episode, EpisodeSampler, Support
from .errors import DataError, MtbenchError, ProtocolError
from .hookspecs import hookimpl
from .metrics import Metric
from .suites import Suite
from .train import History, fit_loop

__all__ = [
    "Algorithm", "DataError", "Dataset", "DatasetSplits", "EmbeddedPredictor", "Episode", "EpisodeSampler",
    "FitData", "History", "LabeledImages", "Metric", "MtbenchError", "Predictor", "ProtocolError", "RunContext",
    "Suite", "Support", "Tags", "Target", "__version__", "fit_loop", "hookimpl",
]
