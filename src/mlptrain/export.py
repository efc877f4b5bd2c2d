"""``mlptrain-export CHECKPOINT -o model.onnx`` (or ``-o model.pt2``): the model outside mlptrain.

The graph takes raw numeric inputs, one row per example (``x``: float32, ``(batch, in_features)``,
raw table values or raw 0-255 pixels in (C, H, W) order), and does what mlptrain does to them: the
training split's standardisation (or pixel normalisation) is inside it, and so is the head, so it
outputs class ``probabilities`` or, for a regressor, ``mean`` and ``sigma``.  The batch size is
dynamic.  A sidecar JSON (``<output>.json``) holds what a graph cannot: the class names, the input
columns in order and, for a table, how its raw columns are encoded (one-hot categories, the values
imputed for missing cells) into ``x``.

``.onnx`` uses torch's TorchScript-based exporter (needs the ``onnx`` package: ``pip install
'mlptrain[export]'``), which exports a model of this size in about a second where the torch.export
based one takes several and needs onnxscript; ``.pt2`` is a :func:`torch.export.export` program,
loaded back with :func:`torch.export.load`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from mlptrain.checkpoint import versions
from mlptrain.errors import BAD_INPUT, EXIT_BAD_INPUT, DataError
from mlptrain.inputs import feature_names, is_image, is_table
from mlptrain.output_file import refuse_inputs, write_output
from mlptrain.predict import Loaded, checkpoint_path, load
from mlptrain.quick_exit import console

FORMATS = (".onnx", ".pt2")
OPSET = 17


class Exported(nn.Module):
    """Raw inputs -> probabilities, or (mean, sigma): what mlptrain-predict writes, as one module."""

    def __init__(self, loaded: Loaded):
        super().__init__()
        self.model, self.task = loaded.model, loaded.task
        self.classifier = loaded.task.task == "classification"

    def forward(self, x: torch.Tensor):
        out = self.model(x).float()
        if self.classifier:
            return self.task.probabilities(out)
        mean, std = self.task.mean_and_std(out)
        return mean, std


def output_names(loaded: Loaded) -> list[str]:
    return ["probabilities"] if loaded.task.task == "classification" else ["mean", "sigma"]


def sidecar(loaded: Loaded, fmt: str) -> dict:
    """What the graph cannot hold: its inputs' meaning and order, the classes, a table's encoding."""
    meta = loaded.meta
    info = {
        "format": fmt,
        "mlptrain": versions()["mlptrain"],
        "checkpoint": str(loaded.path),
        "dataset": meta["name"],
        "task": loaded.task.task,
        "loss": loaded.task.loss_name,
        "input": {"name": "x", "dtype": "float32", "shape": ["batch", meta["in_features"]]},
        "outputs": output_names(loaded),
        "classes": meta["class_names"] if loaded.task.task == "classification" else None,
    }
    if is_table(meta):
        from mlptrain.data.encoding import encoded_names

        pre = meta["preprocess"]
        info["input"]["columns"] = encoded_names(pre)
        info["encoding"] = {
            "how": "each raw column in 'columns' order: a numeric one as its number (a missing cell: 'fill'), "
            "a categorical one as one 0/1 input per category (a missing cell: 'fill'; an unseen category: all 0)",
            "features": pre["features"],
            "columns": pre["columns"],
            "na_values": pre["na_values"],
        }
    elif is_image(meta):
        info["input"]["columns"] = feature_names(meta)
        info["input"]["image_shape"] = meta["input_shape"]
        info["input"]["pixels"] = "raw 0-255 values, flattened channel by channel (C, H, W)"
    else:
        info["input"]["columns"] = feature_names(meta)
    return info


def to_onnx(loaded: Loaded) -> bytes:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it; say so in one line rather than in its words
    except ImportError:
        raise DataError("-o .onnx needs the onnx package: pip install 'mlptrain[export]'") from None
    module = Exported(loaded).cpu().eval()
    example = torch.zeros(2, loaded.meta["in_features"])
    names = output_names(loaded)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: chosen on purpose
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=["x"],
            output_names=names,
            dynamic_axes={n: {0: "batch"} for n in ["x", *names]},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def to_pt2(loaded: Loaded) -> bytes:
    module = Exported(loaded).cpu().eval()
    example = torch.zeros(2, loaded.meta["in_features"])  # 2: a batch of 1 would be specialised to 1
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def export(checkpoint: str | Path, output: str | Path, overrides: list[str] = ()) -> Path:
    """Write ``output`` (.onnx or .pt2) and its sidecar ``<output>.json``; returns the sidecar's path."""
    output = Path(output)
    fmt = output.suffix.lower()
    if fmt not in FORMATS:
        raise DataError(f"-o {output}: unsupported export format {fmt or '(no suffix)'!r}; valid: .onnx, .pt2")
    side = output.with_name(output.name + ".json")
    refuse_inputs(output, [checkpoint_path(checkpoint)])
    refuse_inputs(side, [checkpoint_path(checkpoint)])
    loaded = load(checkpoint, [*overrides, "trainer.device=cpu", "trainer.precision=fp32"])
    loaded.model.float()
    data = to_onnx(loaded) if fmt == ".onnx" else to_pt2(loaded)
    write_output(output, data, "export")
    write_output(side, (json.dumps(sidecar(loaded, fmt[1:]), indent=2) + "\n").encode(), "export sidecar")
    return side


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="mlptrain-export",
        description="Export a checkpoint as an ONNX graph (-o model.onnx) or a torch.export program (-o model.pt2), "
        "raw inputs in, probabilities or mean and sigma out, with a sidecar JSON of classes and encodings.",
    )
    p.add_argument("checkpoint", help="a .pt file, or a run dir (its best.pt, else last.pt)")
    p.add_argument("-o", "--output", required=True, help="model.onnx or model.pt2")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the checkpoint's config")
    args = p.parse_intermixed_args(argv)
    try:
        side = export(args.checkpoint, args.output, args.overrides)
    except BAD_INPUT as e:
        print(f"mlptrain-export: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(f"wrote {args.output} and {side}", file=sys.stderr)


command = console(main)  # the console script (mlptrain.quick_exit)

if __name__ == "__main__":
    command()
