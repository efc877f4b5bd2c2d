"""mlptrain-export: ONNX graphs that onnxruntime runs to torch's numbers (1e-5), torch.export programs,
the sidecar JSON, and one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import call
from mlptrain.export import main as export_main
from test_predict_inputs import train_run

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = ["dataset.n_samples=200"]
    return {
        "classifier": train_run(root, "cls", "dataset=blobs", "dataset.n_classes=3", *base),
        "regressor": train_run(root, "reg", "dataset=friedman1", "loss=mse", *base),
        "probabilistic": train_run(root, "prob", "dataset=sine", "loss=gaussian_nll", *base),
    }


def torch_outputs(run_dir, x: torch.Tensor) -> list:
    """mlptrain-predict's numbers for x, per output of the graph."""
    import mlptrain

    model = mlptrain.load(run_dir)
    if model.task == "classification":
        return [model.predict_proba(x.tolist())]
    mean, sigma = model.predict_dist(x.tolist())
    return [mean.reshape(len(x), -1), sigma.reshape(len(x), -1)]


@pytest.mark.parametrize("kind", ["classifier", "regressor", "probabilistic"])
def test_onnx_matches_torch_within_1e_5_with_a_dynamic_batch(runs, kind, tmp_path):
    out = tmp_path / "model.onnx"
    code, _, err = call(export_main, str(runs[kind]), "-o", str(out))
    assert code == 0, err
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    d = side["input"]["shape"][1]
    assert [i.name for i in session.get_inputs()] == ["x"] and session.get_inputs()[0].shape == ["batch", d]
    assert [o.name for o in session.get_outputs()] == side["outputs"]
    for n in (1, 7):  # the batch size is free
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(n)) * 2
        got = session.run(None, {"x": x.numpy()})
        want = torch_outputs(runs[kind], x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and abs(g - w).max() <= 1e-5
    if kind == "classifier":
        assert side["classes"] == ["0", "1", "2"] and side["outputs"] == ["probabilities"]
    else:
        assert side["outputs"] == ["mean", "sigma"] and side["classes"] is None


def test_pt2_is_a_torch_export_program(runs, tmp_path):
    out = tmp_path / "model.pt2"
    code, _, err = call(export_main, str(runs["probabilistic"]), "-o", str(out))
    assert code == 0, err
    program = torch.export.load(out)
    x = torch.linspace(-3, 3, 5)[:, None]
    mean, sigma = program.module()(x)
    want = torch_outputs(runs["probabilistic"], x)
    assert torch.allclose(mean.double(), torch.from_numpy(want[0]), atol=1e-6)
    assert torch.allclose(sigma.double(), torch.from_numpy(want[1]), atol=1e-6)


def test_a_table_sidecar_holds_the_encoding(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(
        "colour,size,kind\n" + "".join(f"{['red', 'blue'][i % 2]},{i % 3},{'ab'[i % 2]}\n" for i in range(40))
    )
    run = train_run(tmp_path, "run", "dataset=csv", f"dataset.path={table}", "dataset.target=kind")
    code, _, err = call(export_main, str(run), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["input"]["columns"] == ["colour=blue", "colour=red", "size"]
    assert side["encoding"]["features"] == ["colour", "size"] and side["classes"] == ["a", "b"]


def test_bad_exports_are_one_line(runs, tmp_path):
    ck = runs["classifier"] / "best.pt"
    for args, needle in (
        (["-o", str(tmp_path / "m.tflite")], "unsupported export format '.tflite'; valid: .onnx, .pt2"),
        (["-o", str(ck)], "unsupported export format '.pt'"),
        (["-o", str(tmp_path / "nodir" / "m.onnx")], "cannot write export"),
    ):
        code, _, err = call(export_main, str(ck), *args)
        assert code == 2 and needle in err and err.count("\n") == 1, err
    code, _, err = call(export_main, str(tmp_path / "nothing.pt"), "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and "checkpoint not found" in err
