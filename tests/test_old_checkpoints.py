"""Run dirs written by the pre-restructure main (e9fbfd3, tests/fixtures/e9fbfd3/README.md) still
resume, evaluate and predict on today's code, with the numbers e9fbfd3 itself gives.

Each test works on a copy of a fixture run dir in tmp_path; the fixtures are never written."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import call, metrics_csv, mlptrain, refused_in_process, untimed
from mlptrain import checkpoint
from mlptrain.evaluate import eval_main, predict_main

pytestmark = pytest.mark.usefixtures("keep_threads")

FIXTURES = Path(__file__).parent / "fixtures" / "e9fbfd3"
EXPECTED = FIXTURES / "expected"
# What e9fbfd3 itself wrote when it resumed copies of these run dirs (the README's commands):
# the reference for today's code, with the wall-clock fields left out.
RESUMED = json.loads((EXPECTED / "resumed.json").read_text())
FINISHED = ["cls", "reg", "csv"]  # spirals, sine + gaussian_nll, a table with a text column; 2 epochs each
DATASET = {"cls": "spirals", "reg": "sine", "csv": "csv", "mid": "spirals"}


def old_run(name: str, tmp_path: Path) -> Path:
    """A copy of the fixture run dir ``name``: a user's run dir as e9fbfd3 left it.

    ``best.pt`` that e9fbfd3 wrote as a hard link of ``last.pt`` is a symlink in the fixture;
    the copy is a file of its own, as a hard link is once ``last.pt`` is replaced."""
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst, symlinks=False)
    return dst


# Metrics reported since e9fbfd3 (alone or as val/<name>, test_<name>...): a new run reports them beside the old ones.
ADDED_METRICS = {"balanced_acc", "f1", "precision", "recall", "roc_auc", "mape"}


def assert_close(got, want, rel: float, where: str = "") -> None:
    """Equal structure and strings, floats within ``rel`` (the same machine gives them exactly)."""
    if isinstance(want, dict) and isinstance(got, dict):
        got = {k: v for k, v in got.items() if k in want or str(k).rpartition("/")[2] not in ADDED_METRICS}
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: {got} != {want}"
        for k in want:
            assert_close(got[k], want[k], rel, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, rel, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=rel, abs_tol=rel * 1e-2), (
            f"{where}: {got} != {want}"
        )
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_the_fixtures_are_e9fbfd3_checkpoints():
    """The format and versions e9fbfd3 wrote, so that the tests below test what they claim."""
    for name in (*FINISHED, "mid"):
        for file in ("last.pt", "best.pt"):
            ck = checkpoint.load(FIXTURES / name / file)
            assert ck["format"] == "mlptrain-checkpoint" and ck["format_version"] == 1, (name, file)
            assert ck["overrides"] and "mid_epoch" in ck and "rng" in ck
    assert (FIXTURES / "reg" / "best.pt").is_symlink() and (FIXTURES / "csv" / "best.pt").is_symlink()
    assert checkpoint.load(FIXTURES / "csv" / "last.pt")["data"]["preprocess"]["kind"] == "csv"
    assert checkpoint.load(FIXTURES / "mid" / "last.pt")["mid_epoch"] is not None


@pytest.mark.parametrize("name", FINISHED)
def test_an_old_finished_run_trains_longer_from_its_weights(name, tmp_path, monkeypatch):
    """`mlptrain trainer.resume=<dir> trainer.epochs=4` on an e9fbfd3 run: its cosine schedule spans its two
    epochs, so extending it is refused in one line that changes nothing in the dir (e9fbfd3 climbed the lr
    back up); the printed `trainer.init_from` command trains two more epochs in a new run from its weights,
    and that run's checkpoints load and evaluate."""
    run_dir = old_run(name, tmp_path)
    old = read(run_dir)
    assert old["status"] == "completed" and old["epochs"] == 2
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    # The table's run has dataset.path=animals.csv, relative to where it was trained: its run dir.
    # Refused by the resume checks before Hydra runs: in this process (test_first_contact runs it as a process).
    monkeypatch.chdir(run_dir)
    code, _, err = refused_in_process(f"trainer.resume={run_dir}", *RESUMED[name]["args"])
    assert code == 2 and err.count("\n") == 1, err[-3000:]
    assert err.startswith("mlptrain: error: trainer.resume: scheduler=cosine plans the lr over the run's whole")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing rewritten
    command = err.strip().rsplit(": ", 1)[1]
    assert command == f"mlptrain trainer.init_from={run_dir} trainer.epochs=2"

    extra = ["trainer.loggers=[tensorboard,csv]"] if name == "reg" else []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = mlptrain(*command.split()[1:], *extra, cwd=elsewhere)  # from another dir: the data path is pinned
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"weights from {run_dir} (epoch 2, step {old['steps']}); a fresh optimizer and schedule" in r.stdout
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # a new run, elsewhere
    (new_dir,) = list((elsewhere / "outputs").glob("*/*"))
    new = read(new_dir)
    assert new["status"] == "completed" and [h["epoch"] for h in new["history"]] == [1, 2]

    last, best = (checkpoint.load(new_dir / f) for f in ("last.pt", "best.pt"))
    assert (last["epoch"], last["step"], last["mid_epoch"]) == (2, new["steps"], None)
    assert best["epoch"] == new["best_epoch"] and last["history"] == new["history"]
    monkeypatch.chdir(elsewhere)
    code, out, err = call(eval_main, str(new_dir))
    assert code == 0, err
    assert json.loads(out)["metrics"] == new["test"]  # the new best.pt gives the run's test metrics
    if name == "reg":
        header, rows = metrics_csv(new_dir)
        assert [r["epoch"] for r in rows] == ["1", "2", "2"] and header[0] == "epoch"


@pytest.mark.parametrize("name", ["cls", "csv"])
def test_an_old_finished_run_resumed_as_it_is_has_nothing_to_resume(name, tmp_path):
    run_dir = old_run(name, tmp_path)
    before = {f: (run_dir / f).read_bytes() for f in ("last.pt", "best.pt", "metrics.json")}
    r = mlptrain(f"trainer.resume={run_dir}", cwd=run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        f"nothing to resume: {run_dir} finished at epoch 2, step {read(run_dir)['steps']} "
        f"(to train on from its weights in a new run: trainer.init_from={run_dir})"
    ) in r.stdout
    assert "test:" not in r.stdout and not list(run_dir.glob("events.out.tfevents.*"))  # nothing trained
    assert {f: (run_dir / f).read_bytes() for f in before} == before


@pytest.mark.parametrize("name", [*FINISHED, "mid"])
def test_eval_of_an_old_run_gives_its_test_metrics(name, tmp_path, monkeypatch):
    """`mlptrain-eval <dir>`: the test split, rebuilt from the stored config (the table re-read and
    encoded as in training), on best.pt: the old run's own test metrics.  The interrupted run never
    reached its test: the reference is what e9fbfd3's mlptrain-eval printed for it."""
    run_dir = old_run(name, tmp_path)
    monkeypatch.chdir(run_dir)  # where the table's relative dataset.path points
    code, out, err = call(eval_main, str(run_dir), "-o", str(tmp_path / "eval.json"))
    assert code == 0, err
    result = json.loads(out)
    if name == "mid":
        want = json.loads((EXPECTED / "eval_mid.json").read_text())
        assert (result["rows"], result["epoch"]) == (want["rows"], want["epoch"]) == (30, 1)
        want = want["metrics"]
    else:
        want = read(run_dir)["test"]
        assert result["epoch"] == read(run_dir)["best_epoch"]
    assert result["checkpoint"] == str(run_dir / "best.pt") and result["data"] == f"{DATASET[name]}:test"
    assert_close(result["metrics"], want, rel=1e-6, where=name)
    assert json.loads((tmp_path / "eval.json").read_text()) == result


@pytest.mark.parametrize(
    "name, rows, n, columns",
    [
        ("cls", "plane.csv", 5, ["prediction", "p_0", "p_1", "p_2"]),  # a header row, then 5 points
        ("mid", "plane.csv", 5, ["prediction", "p_0", "p_1", "p_2"]),  # an interrupted run's best.pt
        ("reg", "line.csv", 4, ["mean", "sigma"]),  # 4 values, no header
        ("csv", "animals_new.csv", 4, ["prediction", "p_cat", "p_dog", "p_fox"]),  # named columns, another order
    ],
)
def test_predict_from_an_old_run(name, rows, n, columns, tmp_path):
    """`mlptrain-predict <dir> input.csv`: the documented columns, one row per input, and the values
    e9fbfd3's mlptrain-predict wrote.  The table's rows are encoded from the checkpoint alone (its
    `preprocess`): another column order, a missing cell, an unseen category, no table file needed."""
    run_dir = old_run(name, tmp_path)
    if name == "csv":
        (run_dir / "animals.csv").unlink()
    out_csv = tmp_path / "pred.csv"
    code, out, err = call(predict_main, str(run_dir), str(FIXTURES / "inputs" / rows), "-o", str(out_csv))
    assert code == 0, err
    with open(out_csv, newline="") as f:
        got = list(csv.reader(f))
    with open(EXPECTED / f"predict_{name}.csv", newline="") as f:
        want = list(csv.reader(f))
    assert got[0] == want[0] == columns and len(got) - 1 == len(want) - 1 == n
    numbers = 1 if columns[0] == "prediction" else 0  # the columns after the predicted class
    for g, w in zip(got[1:], want[1:]):
        if numbers:
            p = [float(v) for v in g[1:]]
            assert g[0] == w[0] == columns[1 + p.index(max(p))].removeprefix("p_")
            assert math.isclose(sum(p), 1, abs_tol=1e-5)
        else:
            assert float(g[1]) > 0  # sigma
        assert_close([float(v) for v in g[numbers:]], [float(v) for v in w[numbers:]], rel=1e-6, where=name)


def test_an_old_run_interrupted_mid_epoch_resumes_from_its_checkpoint_file(tmp_path):
    """Ctrl-C at step 19 (epoch 2 of 3, 14 steps an epoch, last.pt every 5 steps and at the signal):
    `mlptrain trainer.resume=<dir>/last.pt` continues mid-epoch in that dir (its .hydra/ marks it as
    a run dir) and ends where e9fbfd3 ends it, which is where the run that was never stopped ended."""
    run_dir = old_run("mid", tmp_path)
    old = read(run_dir)
    stopped = checkpoint.load(run_dir / "last.pt")
    assert old["status"] == "interrupted" and (stopped["epoch"], stopped["step"]) == (1, 19)
    assert stopped["mid_epoch"] is not None

    r = mlptrain(f"trainer.resume={run_dir / 'last.pt'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {run_dir / 'last.pt'}" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid"]  # the same dir, no outputs/ here

    new = read(run_dir)
    assert new["status"] == "completed" and "error" not in new
    assert (new["epochs"], new["steps"]) == (3, 42) and [h["epoch"] for h in new["history"]] == [1, 2, 3]
    assert new["history"][:1] == old["history"]
    want = RESUMED["mid"]
    assert_close(
        {k: untimed(new[k]) for k in want if k != "args"},
        {k: v for k, v in want.items() if k != "args"},
        rel=1e-5,
        where="mid",
    )
    last = checkpoint.load(run_dir / "last.pt")
    assert (last["epoch"], last["step"], last["mid_epoch"]) == (3, 42, None)
