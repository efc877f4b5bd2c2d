"""The HParams experiment summary rebuilt cheaply: the cached walk finds exactly the records ``rglob``
finds as a logdir changes, and a call that cannot change the columns leaves the summary alone."""

from __future__ import annotations

import json
import os
import time

import pytest

from mlptrain.files import write_json
from mlptrain.loggers import hparams as hp

TAGS = ["hparam/best_val_acc", "hparam/test_acc", "hparam/test_nll", "hparam/train_time_s"]


@pytest.fixture(autouse=True)
def fresh_caches():
    hp._listings.clear()
    hp._parsed.clear()
    yield
    hp._listings.clear()
    hp._parsed.clear()


def rglob_records(top):
    """What the summary was built from before the caches: every record ``rglob`` finds, parsed afresh."""
    out = []
    for path in sorted(top.rglob(hp.RECORD)):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("hparams"), dict) and isinstance(rec.get("metrics"), list):
            out.append(rec)
    return out


def make_run(folder, i, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".hydra").mkdir(exist_ok=True)
    (folder / "metrics.json").write_text("{}")
    write_json(folder / hp.RECORD, {"hparams": {"seed": str(i), **extra}, "metrics": TAGS[:2]}, hp.RECORD)


def age(top, seconds=3600):
    """Make everything under ``top`` as old as an earlier sweep's files (what the caches may keep)."""
    t = time.time() - seconds
    for folder, _, files in os.walk(top):
        for name in [*files, "."]:
            os.utime(os.path.join(folder, name), (t, t))


def test_the_cached_walk_finds_what_rglob_finds_as_the_logdir_changes(tmp_path):
    top = tmp_path / "outputs"
    for i in range(3):  # single runs, a sweep nested at its usual depth, one deeper, and stray files
        make_run(top / "2026-01-01" / f"12-00-0{i}", i)
        make_run(top / "multirun" / "2026-01-02" / "10-00-00" / str(i), 10 + i, optim="adam")
    make_run(top / "multirun" / "2026-01-02" / "10-00-00" / "0" / "fold" / "a", 99)  # a run inside a run
    (top / "2026-01-01" / "stray").mkdir()
    (top / "2026-01-01" / "stray" / hp.RECORD).write_text("not json")
    (top / "odd" / hp.RECORD).mkdir(parents=True)  # a folder of that name
    elsewhere = tmp_path / "elsewhere"
    make_run(elsewhere / "r", 7)
    (top / "linked").symlink_to(elsewhere, target_is_directory=True)  # not followed, as rglob does not
    age(tmp_path)

    def check():
        assert [os.fspath(p) for p in sorted(top.rglob(hp.RECORD))] == hp._record_paths(top)
        assert hp._records(top) == rglob_records(top)

    check()
    check()  # from the caches
    assert hp._listings and hp._parsed
    make_run(top / "multirun" / "2026-01-02" / "10-00-00" / "3", 13, optim="sgd")  # a new job of the sweep
    check()
    write_json(top / "2026-01-01" / "12-00-01" / hp.RECORD, {"hparams": {"seed": "x"}, "metrics": []}, hp.RECORD)
    check()  # a record rewritten
    (top / "2026-01-01" / "12-00-02" / hp.RECORD).unlink()
    check()  # a record gone
    age(tmp_path)
    check()
    deep = top / "multirun" / "2026-01-02" / "10-00-00" / "1" / ".hydra" / "x"
    make_run(deep, 5)  # a record appears deep in a folder the cache knows
    check()


def test_a_record_changed_in_place_within_one_clock_tick_is_read_again(tmp_path):
    """A timestamp that recent may not move for a second change on a coarse clock: never trusted."""
    top = tmp_path / "outputs"
    path = top / "run" / hp.RECORD
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"hparams": {"seed": "1"}, "metrics": []}))
    st = path.stat()
    assert hp._records(top) == [{"hparams": {"seed": "1"}, "metrics": []}]
    with open(path, "r+") as f:  # same inode, same size ...
        f.write(json.dumps({"hparams": {"seed": "2"}, "metrics": []}))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same mtime
    assert hp._records(top) == [{"hparams": {"seed": "2"}, "metrics": []}]


def summary_of(top):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG, parse_experiment_plugin_data

    for event in EventFileLoader(str(top / hp.EXPERIMENT_FILE)).Load():
        for v in event.summary.value:
            if v.tag == EXPERIMENT_TAG:
                return parse_experiment_plugin_data(v.metadata.plugin_data.content)
    raise AssertionError("no experiment summary")


def test_the_first_epoch_call_keeps_the_summary_and_the_end_rebuilds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    top = tmp_path / "outputs"
    run = top / "2026-01-01" / "12-00-00"
    run.mkdir(parents=True)
    values = {"optim": "sgd", "optim.lr": 0.1, "seed": "0"}
    hp.record(run, values, TAGS)  # the start
    summary = top / hp.EXPERIMENT_FILE
    first = summary.stat()
    assert [m.name.tag for m in summary_of(top).metric_infos] == TAGS

    rebuilds = []
    monkeypatch.setattr(hp, "write_experiment", lambda top, rebuild=hp.write_experiment: rebuilds.append(rebuild(top)))
    hp.record(run, values, TAGS, "nll")  # the first epoch: the duplicate decided, the columns unchanged
    assert json.loads((run / hp.RECORD).read_text())["duplicate"] == "nll"
    assert not rebuilds  # not even walked

    other = top / "2026-01-01" / "12-00-01"
    other.mkdir()
    hp.record(other, values, TAGS)  # another run with the same columns: the same summary, not rewritten
    assert len(rebuilds) == 1 and summary.stat().st_ino == first.st_ino

    end = [t for t in TAGS if t != "hparam/test_nll"]
    hp.record(run, values, end, "nll")  # the end: a column fewer for this run, the other still has it
    hp.record(other, {**values, "seed": "1"}, end, "nll")
    assert summary.stat().st_ino != first.st_ino
    exp = summary_of(top)
    assert [m.name.tag for m in exp.metric_infos] == end
    assert {h.name: h.differs for h in exp.hparam_infos} == {"optim": False, "optim.lr": False, "seed": True}
    from tensorboard.plugins.hparams.metadata import parse_experiment_plugin_data

    afresh = hp.experiment(rglob_records(top)).value[0].metadata.plugin_data.content
    assert exp == parse_experiment_plugin_data(afresh)  # what a rebuild from scratch makes
