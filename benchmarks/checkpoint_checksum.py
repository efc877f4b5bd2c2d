"""What the checkpoint checksum costs: save and load of an MNIST-sized MLP's checkpoint (784-1024-1024-10,
its Adam state and a copy of the best weights), with the sha256 of its contents and without it
(the reference, in the same run), as medians of --repeats and their ratio.

    python benchmarks/checkpoint_checksum.py [--repeats 7] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from _reference import median_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=1024)
    args = ap.parse_args()

    import torch

    from mlptrain import checkpoint
    from mlptrain.files import write_bytes

    torch.manual_seed(0)
    h = args.hidden
    model = torch.nn.Sequential(torch.nn.Linear(784, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.Linear(h, 10))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 784)).sum().backward()
    opt.step()
    payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "best_model": model.state_dict()}
    path = Path(tempfile.mkdtemp()) / "last.pt"

    def save_plain():  # checkpoint.save without the digest
        buf = io.BytesIO()
        torch.save({"format": checkpoint.FORMAT, "format_version": 1, **payload}, buf)
        write_bytes(path.with_name("plain.pt"), buf.getbuffer(), "checkpoint")

    save_plain()
    rows = {
        "save": (median_s(lambda: checkpoint.save(path, payload), args.repeats), median_s(save_plain, args.repeats)),
        "load": (
            median_s(lambda: checkpoint.load(path), args.repeats),
            median_s(lambda: checkpoint.load(path.with_name("plain.pt")), args.repeats),
        ),
    }
    print(f"checkpoint {path.stat().st_size / 1e6:.1f} MB, medians of {args.repeats}")
    for name, (with_sum, plain) in rows.items():
        print(f"{name}: {with_sum * 1e3:6.1f} ms with checksum, {plain * 1e3:6.1f} ms without: x{with_sum / plain:.2f}")


if __name__ == "__main__":
    main()
