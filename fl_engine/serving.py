"""The trained global survival model as an MLflow pyfunc: a table in, risk and survival out.

The artifact is the folder written by `fl_engine.federation.loop.save_model` (model.npz +
model.json with the federation-wide Preprocessor), so a registered model predicts on any
ML-ready table of the same use case, whatever the node it comes from.
"""
from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd

HORIZONS_MONTHS = (12.0, 24.0, 60.0)


class SurvivalPyfunc(mlflow.pyfunc.PythonModel):
    """predict(table) -> DataFrame with `risk` (higher = worse) and, when the model carries a
    baseline hazard, `surv_<h>m`: survival probability at 12/24/60 months."""

    def load_context(self, context) -> None:
        from fl_engine.federation.loop import load_model  # torch: only when MLflow loads the model

        self.model, self.preprocessor, self.meta = load_model(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        x = self.preprocessor.transform(model_input)
        risk = self.model.predict_risk(x)
        out = pd.DataFrame({"risk": np.asarray(risk, dtype=float)}, index=model_input.index)
        try:
            surv = self.model.predict_survival(x, np.asarray(HORIZONS_MONTHS))
        except RuntimeError:  # a model saved without a baseline hazard predicts risk only
            return out
        for j, h in enumerate(HORIZONS_MONTHS):
            out[f"surv_{int(h)}m"] = surv[:, j]
        return out
