"""TensorBoard's HParams table for any mix of runs under one logdir.

The HParams plugin takes its columns from an *experiment* summary, and with several in the logdir it
uses whichever it finds first; with none, it builds the hyperparameter columns from the runs' session
summaries (the union over all runs, each marked ``differs`` when its values vary) and makes every
scalar tag of every run a metric column, alphabetically (``dead_relu/*`` first).  So:

* each run writes its session summaries (its hyperparameter values, its end) into its own event file,
  never an experiment summary, and keeps a small ``hparams.json`` (its values and its ordered metric
  tags) beside them;
* the top folder under the working directory that holds the run (``outputs/``; for a run dir outside
  the working directory, its parent) gets the one experiment summary, ``events.out.tfevents.0.hparams``,
  rebuilt from every ``hparams.json`` beneath it: every hyperparameter any run has, ``differs`` where
  the values vary (TensorBoard shows those first, the rest by name), and the metrics in order of
  importance (each run's monitored metric, then its test metrics, train time last).

Only one: with several in a logdir, TensorBoard takes an arbitrary one (its data server's run order).
So ``tensorboard --logdir outputs`` shows every run's columns, whatever the mix of tasks; pointed at
a folder inside (one sweep), TensorBoard builds the hyperparameter columns itself, also marking the
varying ones, and lists every scalar as a metric, alphabetically.

TensorBoard reads a summary once per folder it loads: runs started after it opened add their rows at
once, their new columns after a restart.  Integers are written as text: the table prints numbers to
five significant digits (a seed 0 as ``0.0000``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlptrain.files import atomic_write, write_json

RECORD = "hparams.json"
EXPERIMENT_FILE = "events.out.tfevents.0.hparams"


def value(v):
    """An hyperparameter as the table shows it: bools, floats and strings as they are, ints as text."""
    if isinstance(v, bool) or isinstance(v, (float, str)):
        return v
    return str(v)


def resolved(hparams: dict, config: dict) -> dict:
    """``hparams`` with each ``auto`` value as the run resolved it in ``config`` (the resolved config:
    ``loss`` -> ``cross_entropy``, ``trainer.batch_size`` -> ``128``, ...); a group choice ``loss`` is
    the loss's name."""

    def lookup(key: str):
        node = config
        for part in ("loss.name" if key == "loss" else key).split("."):
            if not isinstance(node, dict) or part not in node:
                return "auto"
            node = node[part]
        return node

    return {k: lookup(k) if v == "auto" else v for k, v in hparams.items()}


def display_name(tag: str) -> str:
    """``hparam/best_val_acc`` -> ``best val/acc``, ``hparam/test_rmse`` -> ``test/rmse``."""
    name = tag.removeprefix("hparam/")
    if name.startswith("best_val_"):
        return f"best val/{name[len('best_val_') :]}"
    if name.startswith("test_"):
        return f"test/{name[len('test_') :]}"
    return "train time (s)" if name == "train_time_s" else name


def root(run_dir: Path, cwd: Path | None = None) -> Path | None:
    """The folder TensorBoard is pointed at: the top folder under the working directory that holds
    ``run_dir`` (``outputs``); a run dir outside it: its parent; None for a run dir that is itself
    a folder of the working directory."""
    run_dir, cwd = Path(run_dir).resolve(), Path(cwd or os.getcwd()).resolve()
    try:
        parts = run_dir.relative_to(cwd).parts
    except ValueError:
        return run_dir.parent
    return cwd / parts[0] if len(parts) > 1 else None


def _records(root: Path) -> list[dict]:
    out = []
    for path in sorted(root.rglob(RECORD)):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written, or not ours
        if isinstance(rec, dict) and isinstance(rec.get("hparams"), dict) and isinstance(rec.get("metrics"), list):
            out.append(rec)
    return out


def _hparam_info(name: str, values: list, everywhere: bool):
    from tensorboard.plugins.hparams.api_pb2 import DataType, HParamInfo, Interval

    distinct = {json.dumps(v) for v in values}
    info = HParamInfo(name=name, differs=len(distinct) > 1 or not everywhere)
    if all(isinstance(v, bool) for v in values):
        info.type = DataType.Value("DATA_TYPE_BOOL")
        info.domain_discrete.extend(sorted(set(values)))
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        info.type = DataType.Value("DATA_TYPE_FLOAT64")
        info.domain_interval.CopyFrom(Interval(min_value=min(values), max_value=max(values)))
    else:
        info.type = DataType.Value("DATA_TYPE_STRING")
        info.domain_discrete.extend(sorted({str(v) for v in values}))
    return info


def experiment(records: list[dict]):
    """The experiment summary over ``records`` (each ``{"hparams": {...}, "metrics": [tags]}``)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Experiment, MetricInfo, MetricName
    from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG, PLUGIN_DATA_VERSION, PLUGIN_NAME
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    values: dict[str, list] = {}
    for rec in records:
        for k, v in rec["hparams"].items():
            values.setdefault(k, []).append(v)
    hparams = [_hparam_info(k, vs, len(vs) == len(records)) for k, vs in values.items()]
    # Each run lists its metrics by importance; across runs, rank by the place in its own list.
    rank: dict[str, tuple] = {}
    for rec in records:
        for i, tag in enumerate(rec["metrics"]):
            key = (tag.endswith("train_time_s"), i, len(rank))
            rank[tag] = min(rank.get(tag, key), key)
    metrics = [MetricInfo(name=MetricName(tag=t), display_name=display_name(t)) for t in sorted(rank, key=rank.get)]
    content = HParamsPluginData(
        experiment=Experiment(hparam_infos=hparams, metric_infos=metrics), version=PLUGIN_DATA_VERSION
    )
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=EXPERIMENT_TAG, metadata=meta)])


def session_start(hparams: dict):
    """One run's row: its hyperparameter values."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_START_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionStartInfo

    ssi = SessionStartInfo()
    for k, v in hparams.items():
        if isinstance(v, bool):
            ssi.hparams[k].bool_value = v
        elif isinstance(v, float):
            ssi.hparams[k].number_value = v
        else:
            ssi.hparams[k].string_value = str(v)
    content = HParamsPluginData(session_start_info=ssi, version=PLUGIN_DATA_VERSION)
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=SESSION_START_INFO_TAG, metadata=meta)])


def session_end():
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    content = HParamsPluginData(
        session_end_info=SessionEndInfo(status=Status.Value("STATUS_SUCCESS")), version=PLUGIN_DATA_VERSION
    )
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)])


def record(run_dir: Path, hparams: dict, metrics: list[str], duplicate: str | None = None) -> None:
    """Keep the run's values and metric tags (and which metric duplicates the loss, for a resume)
    beside its events, and rebuild the summary above it."""
    rec = {"hparams": hparams, "metrics": list(metrics), "duplicate": duplicate}
    write_json(Path(run_dir) / RECORD, rec, RECORD)
    top = root(run_dir)
    if top is not None:
        write_experiment(top)


def write_experiment(top: Path) -> None:
    """``top``'s experiment summary, from every run record beneath it (a failure to write it costs
    the table's column order, never the run)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    records = _records(top)
    if not records:
        return
    events = [
        Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString(),
        Event(wall_time=0.0, step=0, summary=experiment(records)).SerializeToString(),
    ]

    def write(f):
        out = RecordWriter(f)
        for e in events:
            out.write(e)

    try:
        atomic_write(Path(top) / EXPERIMENT_FILE, write)
    except OSError:
        pass
