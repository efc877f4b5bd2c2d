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
  the values vary (TensorBoard opens on five of those, by name; with more, the keys a sweep varies are
  the ones marked, then the differing group choices), and the metrics in order of importance (each run's
  monitored metric, then its test metrics, train time last).

Only one: with several in a logdir, TensorBoard takes an arbitrary one (its data server's run order).
So ``tensorboard --logdir outputs`` shows every run's columns, whatever the mix of tasks; pointed at
a folder inside (one sweep), TensorBoard builds the hyperparameter columns itself, also marking the
varying ones, and lists every scalar as a metric, alphabetically.

TensorBoard reads a summary once per folder it loads: runs started after it opened add their rows at
once, their new columns after a restart.  Integers are written as text: the table prints numbers to
five significant digits (a seed 0 as ``0.0000``).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from mlptrain.files import atomic_write, write_json

RECORD = "hparams.json"
VISIBLE = 5  # the hyperparameter columns TensorBoard's HParams table shows when it opens
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


# What a logdir holds, kept between rebuilds of its summary (a sweep rebuilds it three times a job):
# each folder's listing while its mtime is unchanged, each record while its file is.  Only what was
# already older than RACY_NS when it was read is kept: a timestamp that recent may not move for a
# change made within the same tick of a coarse clock.
RACY_NS = 2_000_000_000
_listings: dict[str, tuple[int, bool, list[str]]] = {}  # folder -> (mtime_ns, has a record, sub-folders)
_parsed: dict[str, tuple[tuple[int, int, int], dict | None]] = {}  # record -> ((ino, mtime_ns, size), its content)


def _record_paths(top: Path) -> list[str]:
    """Every ``hparams.json`` beneath ``top``, as ``sorted(top.rglob(RECORD))`` has them (symlinked folders
    not followed, in the order of their parts), as strings: ``Path`` objects cost more than the walk."""
    found, stack = [], [os.fspath(top)]
    while stack:
        folder = stack.pop()
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            continue
        cached = _listings.get(folder)
        if cached is not None and cached[0] == mtime:
            _, has, subs = cached
        else:
            has, subs, now = False, [], time.time_ns()
            try:
                with os.scandir(folder) as entries:
                    for e in entries:
                        if e.name == RECORD:
                            has = True
                        elif e.is_dir(follow_symlinks=False):
                            subs.append(e.path)
            except OSError:
                continue
            if now - mtime > RACY_NS:
                _listings[folder] = (mtime, has, subs)
            else:
                _listings.pop(folder, None)
        if has:
            found.append(os.path.join(folder, RECORD))
        stack.extend(subs)
    return sorted(found, key=lambda p: p.split(os.sep))


def _read_record(path: str) -> dict | None:
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = _parsed.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        now = time.time_ns()
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None  # being written, or not ours
    if not (isinstance(rec, dict) and isinstance(rec.get("hparams"), dict) and isinstance(rec.get("metrics"), list)):
        rec = None
    if now - st.st_mtime_ns > RACY_NS:
        _parsed[path] = (key, rec)
    return rec


def _records(root: Path) -> list[dict]:
    return [rec for _, rec in _entries(root)]


def _entries(root: Path) -> list[tuple[str, dict]]:
    return [(path, rec) for path in _record_paths(Path(root)) if (rec := _read_record(path)) is not None]


def _in_sweeps(entries: list[tuple[str, dict]]) -> list[dict]:
    """Each record with ``sweep``: the sweep folder holding its run (a folder with ``multirun.yaml``),
    or None for a single run."""
    out, sweeps = [], {}
    for path, rec in entries:
        parent = os.path.dirname(os.path.dirname(path))
        if parent not in sweeps:
            sweeps[parent] = os.path.isfile(os.path.join(parent, "multirun.yaml"))
        out.append({**rec, "sweep": parent if sweeps[parent] else None})
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
    per_sweep: dict[tuple[str, str], set] = {}  # (sweep folder, key) -> the values its jobs have
    for rec in records:
        for k, v in rec["hparams"].items():
            values.setdefault(k, []).append(v)
            if rec.get("sweep"):
                per_sweep.setdefault((rec["sweep"], k), set()).add(json.dumps(v))
    hparams = [_hparam_info(k, vs, len(vs) == len(records)) for k, vs in values.items()]
    # TensorBoard opens the table on its first VISIBLE columns, those marked ``differs`` by name, then the
    # rest by name (its backend sorts them so).  With more keys differing than that, what a sweep varies
    # (its seeds too) must not be hidden behind what only differs between experiments: the columns marked
    # are the swept keys, then the differing group choices (dataset, model, ...), then other differing keys.
    swept = {k for (_, k), vs in per_sweep.items() if len(vs) > 1}
    order = list(values)
    differing = sorted((h.name for h in hparams if h.differs), key=lambda k: (k not in swept, "." in k, order.index(k)))
    for h in hparams:
        h.differs = h.name in differing[:VISIBLE]
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
    beside its events, and rebuild the summary above it when its columns may change: not when the
    run's values and tags are those it already recorded (its first epoch, deciding the duplicate)."""
    path = Path(run_dir) / RECORD
    rec = {"hparams": hparams, "metrics": list(metrics), "duplicate": duplicate}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old != rec:
        write_json(path, rec, RECORD)
    top = root(run_dir)
    if top is None:
        return
    same = isinstance(old, dict) and [old.get("hparams"), old.get("metrics")] == [rec["hparams"], rec["metrics"]]
    if not same or not (top / EXPERIMENT_FILE).is_file():
        write_experiment(top)


def write_experiment(top: Path) -> None:
    """``top``'s experiment summary, from every run record beneath it (a failure to write it costs
    the table's column order, never the run)."""
    from tensorboard.compat.proto.event_pb2 import Event

    records = _in_sweeps(_entries(top))
    if not records:
        return
    events = [
        Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString(),
        Event(wall_time=0.0, step=0, summary=experiment(records)).SerializeToString(),
    ]

    path = Path(top) / EXPERIMENT_FILE
    summary = b"".join(map(_framed, events))
    try:
        if path.read_bytes() == summary:
            return  # (another run's rebuild that changed nothing: no rewrite, no fsync)
    except OSError:
        pass
    try:
        atomic_write(path, lambda f: f.write(summary))
    except OSError:
        pass


def _framed(event: bytes) -> bytes:
    """One record as TensorBoard's ``RecordWriter`` writes it."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    out = io.BytesIO()
    RecordWriter(out).write(event)
    return out.getvalue()
