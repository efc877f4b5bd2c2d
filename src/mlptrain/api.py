"""mlptrain from Python: ``mlptrain.load(checkpoint)`` to predict, ``mlptrain.train([...])`` to train.

>>> model = mlptrain.load("outputs/2026-01-01/12-00-00")          # a run dir or a .pt file
>>> model.predict([{"size": 4.2, "colour": "red"}])                 # classes (or regression means)
>>> model.predict_proba(df)                                         # a DataFrame, dicts or a 2-D array
>>> result = mlptrain.train(["dataset=moons", "trainer.epochs=5"])  # result.metrics, result.run_dir

Predictions are the numbers ``mlptrain-predict`` writes (the same code computes both).  A row that
cannot be used (a cell that is not a finite number, an empty row) raises :class:`DataError` naming
it; nothing is turned into a NaN prediction.  Inputs need no pandas: lists and arrays work alike.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlptrain.errors import ConfigError, DataError, from_record

__all__ = ["Model", "TrainResult", "load", "train"]


class Model:
    """A checkpoint's model, ready to predict from raw inputs (as in training: raw table values, raw
    0-255 pixels).  ``inputs``: a pandas DataFrame or a list of dicts (by column name), a 2-D array or
    list of rows (in :attr:`features` order), or for image models PNG/JPEG paths or (N, C, H, W) arrays."""

    def __init__(self, loaded):
        self._loaded = loaded

    # --- what the model is ---------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._loaded.path

    @property
    def task(self) -> str:
        """classification | regression"""
        return self._loaded.task.task

    @property
    def classes(self) -> list[str] | None:
        return list(self._loaded.meta["class_names"]) if self.task == "classification" else None

    @property
    def features(self) -> list[str]:
        from mlptrain.inputs import feature_names

        return feature_names(self._loaded.meta)

    @property
    def config(self) -> dict:
        """The run's resolved config, as stored in the checkpoint."""
        return self._loaded.ckpt["config"]

    def __repr__(self) -> str:
        what = f"{len(self.classes)} classes" if self.classes else self.task
        return f"<mlptrain.Model {self._loaded.meta['name']}: {len(self.features)} inputs, {what}; {self.path}>"

    # --- predictions ---------------------------------------------------------------------
    def predictions(self, inputs) -> dict[str, list]:
        """``mlptrain-predict``'s columns: name -> one value per row (``prediction``, ``p_<class>``...;
        ``mean``, ``sigma``...)."""
        from mlptrain.predict import predict

        cols, rows = predict(self._loaded, self._rows(inputs).x)
        return {c: [r[j] for r in rows] for j, c in enumerate(cols)}

    def predict(self, inputs):
        """Classes (a list of class names) for a classifier; the predicted means for a regressor
        (an (N,) array, or (N, k) for k targets)."""
        cols = self.predictions(inputs)
        if self.task == "classification":
            return cols["prediction"]
        return self._matrix(cols, "mean")

    def predict_proba(self, inputs):
        """Class probabilities, an (N, n_classes) array in :attr:`classes` order."""
        if self.task != "classification":
            raise DataError(f"{self.path} is a regressor: no class probabilities; use predict_dist for mean and sigma")
        return self._matrix(self.predictions(inputs), "p_")

    def predict_dist(self, inputs):
        """The predictive mean and standard deviation (two arrays) of a regressor."""
        if self.task != "regression":
            raise DataError(f"{self.path} is a classifier: no mean and sigma; use predict_proba for probabilities")
        cols = self.predictions(inputs)
        return self._matrix(cols, "mean"), self._matrix(cols, "sigma")

    @staticmethod
    def _matrix(cols: dict, prefix: str):
        import numpy as np

        names = [c for c in cols if c.startswith(prefix)]
        a = np.array([cols[c] for c in names], dtype=np.float64).T
        return a[:, 0] if len(names) == 1 and prefix != "p_" else a

    def _rows(self, inputs):
        from mlptrain import image_files
        from mlptrain.inputs import from_array, from_records, is_table, read_csv

        meta = self._loaded.meta
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        if hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):  # a pandas DataFrame
            rows = from_records(inputs.to_dict("records"), meta)
        elif isinstance(inputs, Sequence) and inputs and all(isinstance(r, (str, Path)) for r in inputs):
            names = [str(r) for r in inputs]
            if len(names) == 1 and names[0].lower().endswith((".csv", ".tsv", ".txt")):
                delimiter = getattr(self._loaded.run.dataset, "delimiter", ",") if is_table(meta) else ","
                rows = read_csv(names[0], meta, False, delimiter)
            else:
                rows = image_files.read_images(image_files.image_paths(names), meta)
        elif isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], Mapping):
            rows = from_records(inputs, meta)
        else:
            rows = from_array(inputs, meta)
        if rows.refused:
            raise rows.first_refusal()
        return rows


def load(path: str | Path, overrides: Sequence[str] = ()) -> Model:
    """The model of a checkpoint (a ``.pt`` file, or a run dir: its best.pt, else last.pt).
    ``overrides``: as for ``mlptrain-eval`` (``trainer.device=cpu``)."""
    from mlptrain.predict import load as load_checkpoint

    return Model(load_checkpoint(path, list(overrides)))


@dataclass
class TrainResult:
    metrics: dict  # metrics.json: status, best and test metrics, history
    run_dir: Path

    @property
    def test(self) -> dict:
        return self.metrics.get("test") or {}


def train(overrides: Sequence[str] | str = ()) -> TrainResult:
    """Train one run, composed and validated exactly as ``mlptrain <overrides>`` (the same code: the
    run dir, ``.hydra/``, logs and checkpoints are those of the command).  A problem raises the
    command's one-line error (:class:`ConfigError`, :class:`DataError`, :class:`TrainingError` ...)."""
    from mlptrain.cli import train as cli

    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    if {"-m", "--multirun"} & set(overrides):
        raise ConfigError("mlptrain.train runs one job; run a sweep with the command: mlptrain -m ...")
    from mlptrain.compose import precompose

    precompose(overrides)  # a bad override raises here, as the one line the command prints
    cli.last_job.clear()
    saved = sys.argv
    sys.argv = ["mlptrain", *overrides]
    try:
        cli.main()
    except SystemExit as e:
        if "error" in cli.last_job:
            raise from_record(cli.last_job["error"]) from None
        if e.code not in (0, None):
            raise ConfigError(f"mlptrain {' '.join(overrides)} exited with status {e.code}") from None
    finally:
        sys.argv = saved
    if "metrics" not in cli.last_job:
        raise ConfigError("mlptrain.train: the run did not start (see the messages above)")
    return TrainResult(cli.last_job["metrics"], Path(cli.last_job["run_dir"]))
