"""The MLflow pyfunc wrapper around a scorer: one model format for every use case.

The scorer is stored as a pickle artifact next to the model; ``mlflow.pyfunc.load_model`` gives
a model whose ``predict`` takes a DataFrame of features (ids included where the use case needs
them) and returns a DataFrame of outputs. Serving unwraps it with :func:`load_scorer` and calls
the scorer directly, skipping pyfunc's per-call input conversion.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from shopml.runtime.scorers import Scorer

SCORER_ARTIFACT = "scorer"


class ShopmlModel(PythonModel):
    """Loads the pickled scorer from the model's artifacts."""

    def __init__(self) -> None:
        self.scorer: Scorer | None = None

    def load_context(self, context: Any) -> None:
        self.scorer = read_scorer(Path(context.artifacts[SCORER_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        assert self.scorer is not None, "load_context was not called"
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.scorer.predict_frame(model_input)


def write_scorer(scorer: Scorer, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(scorer, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def read_scorer(path: Path) -> Scorer:
    with path.open("rb") as fh:
        scorer = pickle.load(fh)  # our own artifact, from our own registry
    if not isinstance(scorer, Scorer):
        raise TypeError(f"{path} does not hold a shopml scorer")
    return scorer


def load_scorer(model_uri: str) -> Scorer:
    """The scorer inside a registered model (``models:/shopml-returns@champion``)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    wrapped = model.unwrap_python_model()
    if not isinstance(wrapped, ShopmlModel) or wrapped.scorer is None:
        raise TypeError(f"{model_uri} is not a shopml model")
    return wrapped.scorer
