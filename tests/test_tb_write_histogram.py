"""TensorBoard.histogram masks non-finite values only when there are some: the histograms are those of
the finite values, as before, for every kind of tensor."""

from __future__ import annotations

import math

import pytest
import torch

from mlptrain.loggers.tensorboard import TensorBoard

BINS = 64


def expected(values: torch.Tensor):
    """The histogram of the finite values, computed the plain way (mask first)."""
    v = values.detach().flatten().float()
    v = v[torch.isfinite(v)]
    if not v.numel():
        return None
    lo, hi = v.min(), v.max()
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts = torch.histc(v, BINS, float(lo), float(hi)).tolist()
    edges = torch.linspace(float(lo), float(hi), BINS + 1)[1:].tolist()
    return [float(v.min()), float(v.max()), v.numel(), float(v.sum()), float(v.pow(2).sum()), edges, counts]


TENSORS = {
    "weights": torch.randn(64, 32, generator=torch.Generator().manual_seed(0)),
    "constant": torch.full((10,), 0.3),
    "zeros": torch.zeros(5),
    "nan": torch.tensor([1.0, float("nan"), -2.0, 0.5]),
    "inf": torch.tensor([float("inf"), 3.0, float("-inf"), 4.0, 4.0]),
    "only nan": torch.tensor([float("nan"), float("inf")]),
    "empty": torch.zeros(0),
    "half": torch.randn(100, generator=torch.Generator().manual_seed(1)).half(),
}


@pytest.mark.parametrize("name", TENSORS)
def test_histograms_are_those_of_the_finite_values(name, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = TensorBoard(tmp_path)
    tb.histogram(name, TENSORS[name], 1, bins=BINS)
    tb.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    acc.Reload()
    want = expected(TENSORS[name])
    if want is None:
        assert name not in acc.Tags()["histograms"]
        return
    (h,) = acc.Histograms(name)
    v = h.histogram_value
    got = [v.min, v.max, v.num, v.sum, v.sum_squares, list(v.bucket_limit), list(v.bucket)]
    assert got == want
    assert all(math.isfinite(x) for x in got[:5])
