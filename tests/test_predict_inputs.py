"""mlptrain-predict / mlptrain-eval --csv inputs: image checkpoints (pixel columns, PNG/JPEG files), one
output row per input row, non-finite cells refused per row, joinable outputs (--id/--keep), overwrite
traps, pipes, and no temp file left by a killed predict."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import call
from mlptrain.evaluate import eval_main, predict_main


def train_run(root: Path, name: str, *overrides: str) -> Path:
    from hydra import compose, initialize_config_module

    from mlptrain.cli import run

    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["trainer.epochs=2", "model.hidden=[8]", "trainer.progress=none", *overrides],
        )
    run(cfg, root / name)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny MNIST run (from IDX files in the real format) and a tiny classifier on a 2-column set."""
    from test_data_vision import write_mnist

    root = tmp_path_factory.mktemp("runs")
    written = write_mnist(root / "data", n_train=100, n_test=20)
    mnist = train_run(root, "mnist", "dataset=mnist", f"dataset.data_dir={root / 'data'}", "dataset.download=false")
    blobs = train_run(root, "blobs", "dataset=blobs", "dataset.n_classes=3", "dataset.n_samples=200")
    return {"mnist": mnist, "blobs": blobs, "images": written["t10k"][0]}


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines()))


def pixels_csv(path: Path, images, header: bool = True) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow([f"px{i}" for i in range(784)])
        w.writerows([list(map(int, img.reshape(-1))) for img in images])
    return path


def test_an_image_checkpoint_predicts_from_pixel_columns_and_from_png_files(runs, tmp_path):
    from PIL import Image

    images = runs["images"][:4]  # uint8 (4, 28, 28)
    code, out, err = call(predict_main, str(runs["mnist"]), str(pixels_csv(tmp_path / "px.csv", images)))
    assert code == 0, err
    by_csv = rows_of(out)
    assert len(by_csv) == 4 and list(by_csv[0])[:2] == ["prediction", "p_0 - zero"]

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img, mode="L").save(folder / f"img{i}.png")
    code, out, err = call(predict_main, str(runs["mnist"]), str(folder))
    assert code == 0, err
    by_png = rows_of(out)
    assert [r["file"] for r in by_png] == [str(folder / f"img{i}.png") for i in range(4)]
    assert [{k: v for k, v in r.items() if k != "file"} for r in by_png] == by_csv  # the same numbers

    # An RGB image of another size is converted to the training channels and shape; a glob and a list work.
    Image.fromarray(images[0]).convert("RGB").resize((56, 56)).save(tmp_path / "big.jpg")
    code, out, err = call(predict_main, str(runs["mnist"]), str(folder / "img[01].png"), str(tmp_path / "big.jpg"))
    assert code == 0, err
    assert [Path(r["file"]).name for r in rows_of(out)] == ["img0.png", "img1.png", "big.jpg"]

    # eval --csv on pixel columns + target reproduces the test metric on those rows
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"px{i}" for i in range(784)] + ["target"])
        w.writerows([list(map(int, img.reshape(-1))) + [r["prediction"]] for img, r in zip(images, by_csv)])
    code, out, err = call(eval_main, str(runs["mnist"]), "--csv", str(tmp_path / "t.csv"))
    assert code == 0, err
    assert json.loads(out)["metrics"]["acc"] == 1.0 and json.loads(out)["rows"] == 4


def test_importance_of_an_image_model_per_pixel_with_its_picture(runs, tmp_path):
    from PIL import Image

    out = tmp_path / "imp.csv"
    code, text, err = call(
        eval_main, str(runs["mnist"]), "--importance", "--repeats", "1", "--importance-csv", str(out)
    )
    assert code == 0, err
    with open(out, newline="") as f:
        assert sorted(r["column"] for r in csv.DictReader(f)) == sorted(
            f"px_{r}_{c}" for r in range(28) for c in range(28)
        )
    with Image.open(tmp_path / "imp.png") as img:
        assert img.format == "PNG" and img.size == (224, 224) and img.mode == "L"


def test_image_inputs_that_cannot_be_converted_are_one_line(runs, tmp_path):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cases = [
        ([str(tmp_path / "a.gif")], "unsupported input format '.gif'"),
        ([str(tmp_path / "broken.png")], "cannot read image"),
        ([str(tmp_path / "none*.png")], "no PNG or JPEG file matches"),
        ([str(tmp_path / "missing.csv")], "cannot read"),
    ]
    bad = tmp_path / "narrow.csv"
    bad.write_text("1,2,3\n")
    cases.append(([str(bad)], "has 3 feature column(s); the model expects 784 (one per pixel: 1x28x28 raw 0-255"))
    for args, needle in cases:
        code, _, err = call(predict_main, str(runs["mnist"]), *args)
        assert code == 2 and needle in err and err.count("\n") == 1, err
    # A table model given images: which inputs fit
    code, _, err = call(predict_main, str(runs["blobs"]), str(tmp_path / "broken.png"))
    assert code == 2 and "not images; give it a CSV of 2 input column(s)" in err


def test_one_output_row_per_input_row_refused_rows_say_why(runs, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,x0,x1\na,0.1,0.2\nb,,\n\nc,inf,1\nd,1e39,0\ne,nan,0\nf,0.5,1e400\ng,1,2\n")
    code, out, err = call(predict_main, str(runs["blobs"]), str(src), "--id", "id")
    assert code == 0, err
    rows = rows_of(out)
    assert [r["id"] for r in rows] == ["a", "b", "", "c", "d", "e", "f", "g"]  # blank line 4 is a row too
    assert list(rows[0])[:2] == ["id", "prediction"] and list(rows[0])[-1] == "error"
    ok = [r for r in rows if not r["error"]]
    assert [r["id"] for r in ok] == ["a", "g"] and all(r["prediction"] for r in ok)
    for r in rows:
        if r["error"]:
            assert r["prediction"] == "" and all(v == "" for k, v in r.items() if k.startswith("p_"))
    errors = {r["id"]: r["error"] for r in rows}
    assert "line 3: column 'x0': empty cell" in errors["b"]
    assert "line 5: column 'x0': 'inf' is not a finite number" in errors["c"]
    assert "'1e39' is beyond the float32 range" in errors["d"]
    assert "'nan' is not a finite number" in errors["e"] and "'1e400' is not a finite number" in errors["f"]
    assert "6 of 8 row(s) refused" in err and err.count("\n") == 1


def test_a_table_predicts_every_row_and_honours_na_values_given_at_predict(tmp_path):
    table = tmp_path / "t.csv"
    lines = ["colour,size,kind"] + [
        f"{['red', 'blue'][i % 2]},{i % 2 + 0.1 * (i % 5)},{['a', 'b'][i % 2]}" for i in range(60)
    ]
    lines[5] = "red,2.0,"  # a row without a target: training leaves it out
    table.write_text("\n".join(lines) + "\n")
    run = train_run(tmp_path, "run", "dataset=csv", f"dataset.path={table}", "dataset.target=kind")

    new = tmp_path / "new.csv"
    new.write_text("row,colour,size\nr1,red,0.1\nr2,,\nr3,blue,unknown\nr4,blue,-inf\n")
    code, out, err = call(predict_main, str(run), str(new), "--id", "row", "--keep", "colour")
    assert code == 0, err
    rows = rows_of(out)
    assert [r["row"] for r in rows] == ["r1", "r2", "r3", "r4"] and list(rows[0])[:3] == ["row", "colour", "prediction"]
    assert rows[0]["error"] == "" and rows[0]["prediction"] in ("a", "b")
    assert rows[1]["error"].endswith("line 3: empty row")
    assert "'unknown' is not a number; to impute it as missing, pass dataset.na_values=[unknown]" in rows[2]["error"]
    assert "'-inf' is not a finite number" in rows[3]["error"]
    # ... and that advice works: the cell is imputed as in training
    code, out, err = call(predict_main, str(run), str(new), "--id", "row", "dataset.na_values=[unknown]")
    assert code == 0, err
    assert rows_of(out)[2]["prediction"] in ("a", "b") and rows_of(out)[2]["error"] == ""

    # eval --csv leaves out the row without a target, as training did
    code, out, err = call(eval_main, str(run), "--csv", str(table))
    assert code == 0, err
    assert json.loads(out)["rows"] == 59 and json.loads(out)["rows_without_target"] == 1
    assert "1 row(s) without a target left out" in err

    code, _, err = call(predict_main, str(run), str(new), "--id", "nosuch")
    assert code == 2 and "no column 'nosuch' to carry; columns: row, colour, size" in err


def test_outputs_that_are_inputs_are_refused_and_nothing_is_touched(runs, tmp_path):
    ck = runs["blobs"] / "best.pt"
    before = ck.read_bytes()
    src = tmp_path / "in.csv"
    src.write_text("x0,x1\n0,0\n")
    for main, args in (
        (eval_main, [str(ck), "-o", str(ck)]),
        (eval_main, [str(runs["blobs"]), "-o", str(ck)]),  # a run dir means its best.pt
        (predict_main, [str(ck), str(src), "-o", str(src)]),
        (predict_main, [str(ck), str(src), "-o", str(ck)]),
    ):
        code, _, err = call(main, *args)
        assert code == 2 and "that is one of the inputs" in err and err.count("\n") == 1, err
    assert ck.read_bytes() == before and src.read_text() == "x0,x1\n0,0\n"


def test_a_named_pipe_is_refused_without_blocking_and_stdin_reads_pipes(runs, tmp_path, monkeypatch):
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    code, _, err = call(predict_main, str(runs["blobs"]), str(fifo))  # no writer: opening it would block forever
    assert code == 2 and "is a named pipe; to read from a pipe, give '-'" in err
    code, _, err = call(eval_main, str(runs["blobs"]), "--csv", str(fifo))
    assert code == 2 and "is a named pipe" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("x0,x1\n0,0\n1,1\n"))
    code, out, err = call(predict_main, str(runs["blobs"]), "-")
    assert code == 0, err
    assert len(rows_of(out)) == 2


KILL_AT_FSYNC = """
import os, signal, sys
from mlptrain.evaluate import predict_main
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of writing the output
predict_main(sys.argv[1:])
"""


def test_a_killed_predict_leaves_no_temp_file(runs, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    src = tmp_path / "in.csv"
    src.write_text("x0,x1\n" + "0.5,0.5\n" * 50)
    r = subprocess.run(
        [sys.executable, "-c", KILL_AT_FSYNC, str(runs["blobs"]), str(src), "-o", str(out_dir / "pred.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL
    assert list(out_dir.iterdir()) == []  # neither a half-written pred.csv nor a temp file


def test_the_python_api_predicts_what_mlptrain_predict_writes(runs, tmp_path):
    import mlptrain

    src = tmp_path / "in.csv"
    x = torch.randn(6, 2).tolist()
    src.write_text("x0,x1\n" + "".join(f"{a!r},{b!r}\n" for a, b in x))
    code, out, err = call(predict_main, str(runs["blobs"]), str(src))
    assert code == 0, err
    cli = rows_of(out)
    model = mlptrain.load(runs["blobs"])
    assert model.classes == ["0", "1", "2"] and model.features == ["x0", "x1"] and model.task == "classification"
    assert model.config["dataset"]["name"] == "blobs"
    cols = model.predictions(x)
    assert [{k: repr(v) if isinstance(v, float) else v for k, v in zip(cols, r)} for r in zip(*cols.values())] == cli
    assert model.predict(x) == [r["prediction"] for r in cli]
    p = model.predict_proba([{"x0": a, "x1": b} for a, b in x])  # a list of dicts
    assert p.shape == (6, 3) and [[float(r[f"p_{c}"]) for c in "012"] for r in cli] == p.tolist()
    pd = pytest.importorskip("pandas")
    assert model.predict_proba(pd.DataFrame(x, columns=["x0", "x1"])).tolist() == p.tolist()

    from mlptrain.errors import DataError

    with pytest.raises(DataError, match="row 2, column 1: inf is not a finite number"):
        model.predict([[0, 0], [float("inf"), 0]])
    with pytest.raises(DataError, match="is a classifier: no mean and sigma"):
        model.predict_dist(x)
    with pytest.raises(DataError, match="row 1: 3 values; the model expects 2"):
        model.predict([[1, 2, 3]])

    digits = mlptrain.load(runs["mnist"])
    images = runs["images"][:3]
    flat = digits.predict_proba(images.reshape(3, -1))
    assert digits.predict_proba(images[:, None]).tolist() == flat.tolist()  # (N, C, H, W) arrays too
    assert len(digits.features) == 784 and digits.features[0] == "px_0_0"


def test_import_mlptrain_is_torch_free():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mlptrain; assert callable(mlptrain.load) and callable(mlptrain.train); "
            "print(sorted(m for m in ('torch', 'hydra', 'numpy') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


TRAIN_FROM_PYTHON = """
import json, sys, mlptrain
from mlptrain.errors import ConfigError
out = sys.argv[1]
r = mlptrain.train(["dataset=moons", "dataset.n_samples=120", "trainer.epochs=1", "model.hidden=[4]",
                    "trainer.progress=none", f"hydra.run.dir={out}"])
try:
    mlptrain.train(["trainer.batch_sise=3"])  # the second call: mlptrain.train is still callable after a run
except ConfigError as e:
    error = str(e)
print(json.dumps({"run_dir": str(r.run_dir), "status": r.metrics["status"], "test": r.test, "error": error}))
"""


def test_train_from_python_is_the_command(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", TRAIN_FROM_PYTHON, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["run_dir"] == str(tmp_path / "run") and got["status"] == "completed"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert got["test"] == metrics["test"] and (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    assert "trainer.batch_sise" in got["error"]


def test_a_colour_image_is_read_channel_first_as_cifar_is(tmp_path):
    import numpy as np
    from PIL import Image

    from mlptrain.image_files import read_images

    a = np.zeros((4, 4, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = 10, 20, 30
    a[0, 1, 2] = 99  # row 0, column 1, blue
    Image.fromarray(a, "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(a[..., 0], "L").save(tmp_path / "grey.png")  # a grey file for a colour model: R=G=B
    rows = read_images([tmp_path / "rgb.png", tmp_path / "grey.png"], {"input_shape": [3, 4, 4], "in_features": 48})
    x = rows.x.view(2, 3, 4, 4)
    assert x[0, :, 0, 0].tolist() == [10, 20, 30] and x[0, 2, 0, 1] == 99
    assert x[1, :, 0, 0].tolist() == [10, 10, 10] and rows.carried["file"][1].endswith("grey.png")
