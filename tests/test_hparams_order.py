"""The HParams table opens on what a sweep varies: TensorBoard shows the first five columns marked as
differing (by name), so with more differing keys the swept ones are those marked."""

from __future__ import annotations

from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from mlptrain.loggers import hparams as hp


def _marked(records: list[dict]) -> dict[str, bool]:
    summary = hp.experiment(records)
    data = HParamsPluginData.FromString(summary.value[0].metadata.plugin_data.content)
    return {h.name: h.differs for h in data.experiment.hparam_infos}


def _run(sweep, **values):
    base = {"dataset": "spirals", "loss": "cross_entropy", "model": "mlp", "optim": "adam", "optim.lr": 0.001}
    return {"hparams": {**base, "seed": "0", **values}, "metrics": ["hparam/best_val_loss"], "sweep": sweep}


def test_swept_keys_are_marked_before_keys_that_only_differ_between_runs():
    records = [_run("s1", seed=str(i)) for i in range(3)]  # a seed sweep
    records += [
        _run(None, dataset="moons", loss="mse", model="wide", optim="sgd", **{"optim.lr": 0.1, "optim.momentum": 0.9}),
        _run(None, dataset="circles", model="deep", optim="adagrad", **{"optim.lr": 0.01}),
    ]
    marked = _marked(records)
    shown = {k for k, d in marked.items() if d}
    assert len(shown) == hp.VISIBLE and "seed" in shown  # six keys differ; the swept seed is among the five
    assert shown == {"seed", "dataset", "loss", "model", "optim"}  # then the group choices, in the runs' order
    assert marked["optim.lr"] is False and marked["optim.momentum"] is False


def test_few_differing_keys_are_all_marked_and_constant_ones_never():
    records = [_run("s1", optim="sgd"), _run("s1", optim="adam"), _run(None, dataset="moons")]
    marked = _marked(records)
    assert {k for k, d in marked.items() if d} == {"optim", "dataset"}
