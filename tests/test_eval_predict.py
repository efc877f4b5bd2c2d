"""mlptrain-eval / mlptrain-predict: a checkpoint alone reproduces the run's test metrics and predicts
from raw CSV rows; every bad checkpoint is one clear line."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from conftest import call
from mlptrain.evaluate import eval_main, predict_main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One classification and one probabilistic-regression run (tiny), trained once for the module."""
    from hydra import compose, initialize_config_module

    from mlptrain.cli import run

    root = tmp_path_factory.mktemp("runs")
    out = {}
    configs = {"cls": ["dataset=blobs", "dataset.n_classes=3"], "reg": ["dataset=sine", "loss=gaussian_nll"]}
    for name, overrides in configs.items():
        with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=[
                    "trainer.epochs=2",
                    "dataset.n_samples=200",
                    "model.hidden=[8]",
                    "trainer.progress=none",
                    *overrides,
                ],
            )
        run(cfg, root / name)
        out[name] = root / name
    return out


def split(run_dir: Path, name: str = "test"):
    """The run's own split, rebuilt from the config stored in its checkpoint."""
    from omegaconf import OmegaConf

    from mlptrain import checkpoint
    from mlptrain.config import parse
    from mlptrain.data import load_dataset

    data = load_dataset(parse(OmegaConf.create(checkpoint.load(run_dir / "best.pt")["config"])).dataset)
    return getattr(data, f"x_{name}"), getattr(data, f"y_{name}"), data


def write_csv(path: Path, x: torch.Tensor, y: torch.Tensor | None = None) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"x{i}" for i in range(x.shape[1])] + (["target"] if y is not None else []))
        for i in range(len(x)):
            w.writerow([repr(v) for v in x[i].tolist()] + ([y[i].item()] if y is not None else []))
    return path


@pytest.mark.parametrize("kind", ["cls", "reg"])
def test_eval_reproduces_the_runs_test_metrics_exactly(runs, kind, tmp_path):
    code, out, err = call(eval_main, str(runs[kind]), "-o", str(tmp_path / "m.json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["checkpoint"].endswith("best.pt") and result["data"].endswith(":test")
    assert result["metrics"] == json.loads((runs[kind] / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "m.json").read_text()) == result

    # The same rows as a CSV of raw features + target give the same numbers.
    x, y, _ = split(runs[kind])
    code, out, err = call(eval_main, str(runs[kind] / "best.pt"), "--csv", str(write_csv(tmp_path / "t.csv", x, y)))
    assert code == 0, err
    assert json.loads(out)["metrics"] == result["metrics"] and json.loads(out)["rows"] == len(y)


def test_eval_on_another_split_or_dataset_config(runs):
    code, out, err = call(eval_main, str(runs["cls"]), "--split", "val")
    assert code == 0, err
    best = json.loads((runs["cls"] / "metrics.json").read_text())["best"]
    assert json.loads(out)["metrics"]["acc"] == best["val/acc"]
    code, out, err = call(eval_main, str(runs["cls"]), "dataset.n_samples=400", "dataset.seed=7")
    assert code == 0, err
    assert json.loads(out)["rows"] == 60 and 0 <= json.loads(out)["metrics"]["acc"] <= 1
    # Another dataset config whose shape does not fit: one line saying why.
    code, out, err = call(eval_main, str(runs["cls"]), "dataset=moons")
    assert code == 2
    assert err == "mlptrain-eval: error: dataset moons does not fit the checkpoint: outputs 2, the model expects 3\n"


def test_eval_overrides_that_do_not_compose_are_one_line(make_cfg):
    from omegaconf import OmegaConf

    from mlptrain.compose import with_overrides
    from mlptrain.config import ConfigError

    raw = OmegaConf.to_container(make_cfg())
    with pytest.raises(ConfigError) as e:
        with_overrides(raw, ["dataset=moons", "dataset.nosuch=1"])
    assert str(e.value).startswith("dataset.nosuch: unknown key; valid keys in dataset (dataset=moons): name, n_sa")
    with pytest.raises(ConfigError) as e:  # as the training command says it (compose.compose_error)
        with_overrides(raw, ["+dataset@extra=nope"])
    assert str(e.value).startswith("In 'config': Could not find 'dataset/nope' Available options in 'dataset': blobs")
    assert str(e.value).endswith(" spirals xor")  # no list of the folders searched


def test_predict_writes_class_and_probabilities(runs, tmp_path):
    x, y, data = split(runs["cls"])
    out_csv = tmp_path / "pred.csv"
    code, _, err = call(predict_main, str(runs["cls"]), str(write_csv(tmp_path / "in.csv", x)), "-o", str(out_csv))
    assert code == 0, err
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["prediction", "p_0", "p_1", "p_2"] and len(rows) == len(x)
    for r in rows:
        p = [float(r[f"p_{c}"]) for c in data.class_names]
        assert math.isclose(sum(p), 1, abs_tol=1e-5) and r["prediction"] == data.class_names[p.index(max(p))]
    acc = sum(r["prediction"] == data.class_names[int(t)] for r, t in zip(rows, y)) / len(y)
    assert acc == pytest.approx(json.loads((runs["cls"] / "metrics.json").read_text())["test"]["acc"], abs=1e-6)


def test_predict_writes_mean_and_sigma_for_a_probabilistic_head(runs, tmp_path):
    x, y, _ = split(runs["reg"])
    code, out, err = call(predict_main, str(runs["reg"] / "best.pt"), str(write_csv(tmp_path / "in.csv", x)))
    assert code == 0, err  # to stdout by default
    rows = list(csv.DictReader(out.splitlines()))
    assert list(rows[0]) == ["mean", "sigma"] and len(rows) == len(x)
    assert all(float(r["sigma"]) > 0 for r in rows)
    rmse = math.sqrt(sum((float(r["mean"]) - t) ** 2 for r, t in zip(rows, y.tolist())) / len(rows))
    assert rmse == pytest.approx(json.loads((runs["reg"] / "metrics.json").read_text())["test"]["rmse"], rel=1e-5)


def test_predict_input_errors_are_one_line(runs, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    code, _, err = call(predict_main, str(runs["cls"]), str(bad))
    assert code == 2 and err == f"mlptrain-predict: error: {bad} has 3 feature column(s); the model expects 2\n"
    bad.write_text("a,b\n1,x\n")
    code, _, err = call(predict_main, str(runs["cls"]), str(bad))
    assert (
        code == 2
        and err
        == f"mlptrain-predict: error: {bad} line 2: column 'b': 'x' is not a number; no row could be predicted\n"
    )
    code, _, err = call(predict_main, str(runs["cls"]), str(tmp_path / "missing.csv"))
    assert code == 2 and "cannot read" in err and err.count("\n") == 1


def _truncated(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def _file(dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def _pickled_module(dst: Path) -> Path:
    torch.save(torch.nn.Linear(2, 2), dst)  # unpickling it would run code: weights_only refuses
    return dst


def _foreign(dst: Path) -> Path:
    torch.save({"state_dict": {"w": torch.ones(2)}}, dst)
    return dst


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda src, d: _truncated(src, d / "half.pt"), "is truncated or corrupt"),
        (lambda src, d: _file(d / "x.pt", b""), "is not an mlptrain checkpoint (not a file written by torch.save)"),
        (lambda src, d: _file(d / "x.pt", b"epoch,loss\n1,0.5\n"), "not a file written by torch.save"),
        (lambda src, d: _pickled_module(d / "m.pt"), "holds Python objects that weights_only loading refuses"),
        (lambda src, d: _foreign(d / "f.pt"), "is not an mlptrain checkpoint (no 'mlptrain-checkpoint' header)"),
        (lambda src, d: d / "nothing.pt", "checkpoint not found"),
        (lambda src, d: d, "checkpoint not found"),  # a dir without checkpoints
    ],
)
def test_bad_checkpoints_are_one_clear_line(runs, tmp_path, make, needle):
    path = make(runs["cls"] / "best.pt", tmp_path)
    for main, extra in ((eval_main, []), (predict_main, [str(tmp_path / "in.csv")])):
        code, out, err = call(main, str(path), *extra)
        assert code == 2, err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_architecture_mismatch_is_one_clear_line(runs):
    code, _, err = call(eval_main, str(runs["cls"]), "model.hidden=[4]")
    assert code == 2
    assert err == (
        f"mlptrain-eval: error: {runs['cls'] / 'best.pt'}: the weights do not match the model its config "
        "describes (body.layers.0.weight is [8, 2] in the checkpoint, [4, 2] in the model)\n"
    )
    code, _, err = call(eval_main, str(runs["cls"]), "model.hidden=[8,8]")
    assert code == 2 and "missing body.layers.4.weight" in err


def test_console_scripts_are_installed_and_run(runs, tmp_path):
    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("mlptrain")}
    assert scripts["mlptrain-eval"] == "mlptrain.evaluate:eval_command"
    assert scripts["mlptrain-predict"] == "mlptrain.evaluate:predict_command"
    exe = Path(sys.executable).parent / "mlptrain-eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from mlptrain.evaluate import eval_main; eval_main()"]
    r = subprocess.run(
        [*cmd, str(_truncated(runs["cls"] / "best.pt", tmp_path / "t.pt"))], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and r.stderr.startswith("mlptrain-eval: error: ") and r.stderr.count("\n") == 1


def test_a_table_checkpoint_predicts_new_rows_encoded_as_in_training(make_cfg, tmp_path):
    """dataset=csv: new rows (other order of columns, a missing cell, an unseen category, no target)
    are encoded with the checkpoint's own encoders; eval --csv on the held-out rows reproduces the
    run's test metrics; evaluating another file through dataset.path would re-fit the encoders: refused."""
    import random

    from mlptrain.cli import run

    rng = random.Random(0)
    header = ["colour", "size", "weight", "kind"]
    rows = []
    for i in range(240):
        kind = ["cat", "dog", "fox"][i % 3]
        rows.append(
            [
                rng.choice(["red", "blue"]) if kind != "fox" else "orange",
                f"{(i % 3) * 2 + rng.random():.3f}",
                "NA" if i % 17 == 0 else f"{10 * (i % 3) + rng.gauss(0, 1):.2f}",
                kind,
            ]
        )
    table = tmp_path / "animals.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    over = [
        f"dataset.path={table}",
        "dataset.target=kind",
        "trainer.epochs=40",
        "optim.lr=0.05",
        "model.hidden=[8]",
        "trainer.progress=none",
    ]
    metrics = run(make_cfg("dataset=csv", *over), tmp_path / "run")
    assert metrics["test"]["acc"] > 0.9  # an easy table: the predictions below must be the obvious ones

    code, out, err = call(eval_main, str(tmp_path / "run"))  # its own test split, encoders refitted identically
    assert code == 0, err
    assert json.loads(out)["metrics"] == metrics["test"]

    new = tmp_path / "new.csv"
    new.write_text("weight,size,colour\n20.5,4.2,orange\n,0.1,red\n1.0,2.0,green\n")
    code, out, err = call(predict_main, str(tmp_path / "run"), str(new))
    assert code == 0, err
    pred = list(csv.DictReader(out.splitlines()))
    assert list(pred[0]) == ["prediction", "p_cat", "p_dog", "p_fox"] and len(pred) == 3
    assert pred[0]["prediction"] == "fox"

    bad = write_text(tmp_path / "bad.csv", "size,colour\n1,red\n")
    code, _, err = call(predict_main, str(tmp_path / "run"), str(bad))
    assert code == 2 and "column 'weight' is missing" in err and err.count("\n") == 1

    other = tmp_path / "other.csv"
    with open(other, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows[:150]])
    code, _, err = call(eval_main, str(tmp_path / "run"), f"dataset.path={other}")
    assert code == 2 and "encoded differently" in err and "--csv" in err
    code, out, err = call(eval_main, str(tmp_path / "run"), "--csv", str(other))
    assert code == 0, err
    assert json.loads(out)["rows"] == 150 and 0 <= json.loads(out)["metrics"]["acc"] <= 1


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
