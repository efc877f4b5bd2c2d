"""What the pictures cost with mlptrain's torch renderer (``mlptrain.images``) and with matplotlib
(imported lazily, Agg, the same pictures at the same sizes: axes, ticks, legend or colour scale),
in the same run: the import, the first picture of a process, each picture (medians of --repeats), and
what that makes per run and per 8-job sweep at the default frequency (pictures after the last epoch
and on the test split: a 2-D classifier draws a decision boundary and two confusion matrices, an image
set two confusion matrices and two grids of mistakes, a 1-D regression one fit).

    pip install matplotlib   # only for this measurement (without it: the torch renderer alone)
    python benchmarks/renderer_cost.py [--repeats 5]

Point PYTHONPATH at another checkout's src/ to measure its renderer the same way (the "before").
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time

from _reference import median_s

IMPORTS = {
    "torch renderer": "import mlptrain.images, PIL.ImageDraw, PIL.ImageFont",
    "matplotlib": "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot",
}


def import_s(stmt: str, repeats: int) -> float:
    """Seconds ``stmt`` adds to a fresh process that has already imported torch."""
    code = f"import time, torch; t0 = time.perf_counter(); {stmt}; print(time.perf_counter() - t0)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout) for _ in range(3)
    ]
    return sorted(runs)[1]


def inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    t = torch.rand(1500, generator=g) * 12
    y2 = (torch.arange(1500) % 3).long()
    a = t + y2 * 2.1
    x2 = torch.stack([t * torch.cos(a), t * torch.sin(a)], 1) / 12
    w = torch.randn(2, 3, generator=g) * 4

    def proba(p):
        return torch.softmax(p @ w, 1)

    xs = torch.rand(800, 1, generator=g) * 6 - 3
    ys = torch.sin(xs[:, 0]) + 0.2 * torch.randn(800, generator=g)

    def predict(p):
        return torch.sin(p[:, 0]), 0.2 + 0.1 * p[:, 0].abs()

    yt = torch.randint(0, 10, (9000,), generator=g)
    yp = torch.where(torch.rand(9000, generator=g) < 0.97, yt, torch.randint(0, 10, (9000,), generator=g))
    yp[:200] = (yt[:200] + 1) % 10  # the grid's 400 images: 200 mistakes, 64 of them drawn
    imgs = torch.randint(0, 256, (400, 1, 28, 28), generator=g, dtype=torch.uint8)
    conf = torch.rand(400, generator=g)
    return x2, y2, proba, xs, ys, predict, yt, yp, imgs, conf


def torch_pictures(d):
    from mlptrain import images

    x2, y2, proba, xs, ys, predict, yt, yp, imgs, conf = d
    cm = images.confusion_matrix(yt, yp, 10)
    return {
        "decision boundary": lambda: images.decision_boundary(proba, x2, y2, 3),
        "regression fit": lambda: images.regression_fit(predict, xs, ys),
        "confusion matrix (10)": lambda: images.confusion_image(cm, [str(i) for i in range(10)]),
        "misclassified grid": lambda: images.misclassified_grid(imgs, yt[:400], yp[:400], conf, (1, 28, 28)),
    }


def matplotlib_pictures(d):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    x2, y2, proba, xs, ys, predict, yt, yp, imgs, conf = d

    def rgb(fig):  # the (3, H, W) floats the loggers take, as images.* returns
        fig.canvas.draw()
        arr = np.asarray(fig.canvas.buffer_rgba())[..., :3]
        plt.close(fig)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255

    def boundary():
        fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
        g = torch.linspace(-1.1, 1.1, 64)
        gx, gy = torch.meshgrid(g, g, indexing="xy")
        p = proba(torch.stack([gx.flatten(), gy.flatten()], 1))
        conf_, cls = p.max(1)
        colours = torch.tensor(plt.cm.tab10.colors)[cls] * conf_[:, None] + (1 - conf_[:, None])
        ax.imshow(colours.reshape(64, 64, 3).numpy(), extent=(-1.1, 1.1, -1.1, 1.1), origin="lower")
        for k in range(3):
            m = y2 == k
            ax.scatter(x2[m, 0], x2[m, 1], s=4, label=f"class {k}", edgecolors="k", linewidths=0.2)
        ax.set(xlabel="x1", ylabel="x2", title="decision boundary")
        ax.legend(fontsize=6, loc="upper right")
        return rgb(fig)

    def fit():
        fig, ax = plt.subplots(figsize=(4.6, 3.2), dpi=100)
        grid = torch.linspace(-3, 3, 400)[:, None]
        mean, std = predict(grid)
        ax.scatter(xs[:, 0], ys, s=3, c="0.4", label="train split")
        ax.plot(grid[:, 0], mean, label="mean")
        ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.25, label="±2σ")
        ax.set(xlabel="x", ylabel="y", title="regression fit")
        ax.legend(fontsize=7)
        return rgb(fig)

    def confusion():
        from mlptrain import images

        cm = images.confusion_matrix(yt, yp, 10)
        rates = cm / cm.sum(1, keepdim=True).clamp(min=1)
        fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
        im = ax.imshow(rates.sqrt().numpy(), cmap="Reds", vmin=0, vmax=1)
        for i in range(10):
            for j in range(10):
                ax.text(j, i, f"{int(cm[i, j])}\n{100 * float(rates[i, j]):.1f}%", ha="center", va="center", fontsize=6)
        ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        fig.colorbar(im, ax=ax, label="share of the row (sqrt scale)")
        return rgb(fig)

    def grid():
        wrong = (yt[:400] != yp[:400]).nonzero().flatten()[:64]
        fig, axes = plt.subplots(8, 8, figsize=(6.4, 7.2), dpi=100)
        for ax, i in zip(axes.flat, [*wrong.tolist(), *[None] * 64]):
            ax.axis("off")
            if i is not None:
                ax.imshow(imgs[i, 0].numpy(), cmap="gray")
                ax.set_title(f"{int(yt[i])}→{int(yp[i])}", fontsize=6)
        return rgb(fig)

    return {
        "decision boundary": boundary,
        "regression fit": fit,
        "confusion matrix (10)": confusion,
        "misclassified grid": grid,
    }


PER_RUN = {  # pictures of one run at the defaults, by kind of run
    "2-D classifier": {"decision boundary": 1, "confusion matrix (10)": 2},
    "image set": {"confusion matrix (10)": 2, "misclassified grid": 2},
    "1-D regression": {"regression fit": 1},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    data = inputs()
    print(f"torch {torch.__version__}, 1 thread, medians of {args.repeats}; milliseconds")
    results = {}
    renderers = [("torch renderer", torch_pictures), ("matplotlib", matplotlib_pictures)]
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: the torch renderer alone (pip install matplotlib to compare)")
        renderers = renderers[:1]
    for name, build in renderers:
        imp = import_s(IMPORTS[name], args.repeats)
        pictures = build(data)
        t0 = time.perf_counter()
        next(iter(pictures.values()))()  # the first picture of a process (fonts, caches)
        first = time.perf_counter() - t0
        each = {k: median_s(fn, args.repeats, warmup=True) for k, fn in pictures.items()}
        first -= next(iter(each.values()))  # what the first costs beyond any other
        results[name] = (imp, first, each)
        cells = "  ".join(f"{k} {v * 1e3:6.1f}" for k, v in each.items())
        print(f"{name:15} import {imp * 1e3:6.1f}  first picture +{first * 1e3:6.1f}  {cells}")
    print(f"{'per run / per 8-job sweep':26}" + "".join(f"{n:>26}" for n in results))
    for kind, counts in PER_RUN.items():
        row = f"{kind:26}"
        for imp, first, each in results.values():
            pics = sum(n * each[k] for k, n in counts.items())
            row += f"{(imp + first + pics) * 1e3:12.0f} / {(imp + first + 8 * pics) * 1e3:11.0f}"
        print(row)


if __name__ == "__main__":
    main()
