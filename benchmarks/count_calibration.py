"""Calibration of predicted count rates: poisson_nll against mse on dataset=counts (docs/losses.md).

    mlptrain -m dataset=counts loss=poisson_nll,mse seed=0,1,2,3,4 trainer.num_threads=1
    python benchmarks/count_calibration.py outputs/multirun/<date>/<time>

For every job of the sweep it reloads the best checkpoint (as ``mlptrain-eval`` does) and scores the
test split: the test NLL and coverage95 (the numbers in the job's metrics.json), the probability
mass the model itself puts on its 95% interval (0.95 for a Gaussian; at least 0.95 for a discrete
Poisson interval), and a binned check: the test points in five equal-count bins of predicted mean,
and per bin the ratio of the observed mean count to the predicted mean and of the observed
mean squared residual to the predicted variance (1.0 = calibrated), and the bin's coverage95.  The last line scores the
generator itself, Poisson(rate(x)), on the same test split.  Means +- standard deviations over seeds.
"""

from __future__ import annotations

import glob
import json
import math
import statistics as st
import sys
from pathlib import Path

import torch

from mlptrain.data import load_dataset
from mlptrain.data.synthetic import count_rate
from mlptrain.losses.likelihoods import FAMILIES
from mlptrain.predict import load

BINS = 5
PER_BIN = (
    "obs/pred mean (lowest..highest bin)",
    "obs/pred variance (lowest..highest bin)",
    "coverage95 (lowest..highest bin)",
)


def interval_mass(family: str, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """The predicted probability of the model's own central 95% interval, per example."""
    if family != "poisson":
        return torch.full_like(mean, 0.95)
    ks = torch.arange(0, 200.0)[None, :]
    inside = FAMILIES["poisson"].covered95(mean, ks, spread)  # which counts the interval holds
    pmf = torch.distributions.Poisson(mean).log_prob(ks).exp()
    return (pmf * inside).sum(1, keepdim=True)


def scores(family: str, mean: torch.Tensor, spread: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    noise = FAMILIES[family]
    order = mean[:, 0].argsort()
    covered = noise.covered95(mean, y, spread)[:, 0].float()
    ratio_mean, ratio_var, cover = [], [], []
    for idx in order.chunk(BINS):
        m, v, obs = mean[idx, 0], spread[idx, 0], y[idx, 0]
        ratio_mean.append((obs.mean() / m.mean()).item())
        ratio_var.append(((obs - m).pow(2).mean() / v.mean()).item())
        cover.append(covered[idx].mean().item())
    return {
        "nll": noise.nll(mean, y, spread).mean().item(),
        "coverage95": noise.covered95(mean, y, spread).float().mean().item(),
        "interval mass": interval_mass(family, mean, spread).mean().item(),
        "obs/pred mean (lowest..highest bin)": ratio_mean,
        "obs/pred variance (lowest..highest bin)": ratio_var,
        "coverage95 (lowest..highest bin)": cover,
    }


def main(sweep: str) -> None:
    rows, reference = {}, None
    for f in sorted(glob.glob(f"{sweep}/*/metrics.json")):
        job = Path(f).parent
        loaded = load(job)
        data = load_dataset(loaded.run.dataset)
        with torch.no_grad():
            out = loaded.model(data.x_test.to(loaded.device)).float().cpu()
        mean, spread = loaded.task.predictive(out)
        y = data.y_test.reshape(-1, 1).float()
        s = scores(loaded.task.family, mean, spread, y)
        test = json.loads(Path(f).read_text())["test"]
        assert math.isclose(s["nll"], test["nll"], rel_tol=1e-4), (job, s["nll"], test["nll"])  # = metrics.json
        s["rmse"] = test["rmse"]
        rows.setdefault(loaded.run.loss.name, []).append(s)
        rate = count_rate(data.x_test)[:, None]
        reference = scores("poisson", rate, rate, y)
        reference["rmse"] = (rate - y).pow(2).mean().sqrt().item()

    def cell(xs):
        return f"{st.mean(xs):.3f} ± {st.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"

    keys = ["nll", "coverage95", "interval mass", "rmse"]
    print(
        "| loss | seeds | test NLL | test coverage95 | interval mass | test RMSE | obs/pred mean, 5 bins | "
        "obs/pred variance, 5 bins | coverage95, 5 bins |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for loss, ss in rows.items():
        bins = [" ".join(f"{st.mean(s[k][b] for s in ss):.2f}" for b in range(BINS)) for k in PER_BIN]
        print(
            f"| `{loss}` | {len(ss)} | "
            + " | ".join(cell([s[k] for s in ss]) for k in keys)
            + " | "
            + " | ".join(bins)
            + " |"
        )
    r = reference
    bins = [" ".join(f"{v:.2f}" for v in r[k]) for k in PER_BIN]
    print(
        "| the generator, Poisson(rate(x)) | | "
        + " | ".join(f"{r[k]:.3f}" for k in keys)
        + " | "
        + " | ".join(bins)
        + " |"
    )


if __name__ == "__main__":
    main(sys.argv[1])
