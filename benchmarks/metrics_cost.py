"""What the macro metrics and ROC-AUC add to a split's evaluation (``Task.metrics``), on CPU.

    /work/heavy --exclusive .venv/bin/python benchmarks/metrics_cost.py

For a small table's validation split (50 rows, 3 classes) and an MNIST-sized one (10,000 rows, 10
classes): the median time of ``Task.metrics`` with every metric against the same call with the new ones
(balanced_acc, f1, precision, recall, roc_auc) switched off, in the same run, and their ratio.
"""

from __future__ import annotations

import torch

from _reference import median_s
from mlptrain.losses import build_task
from mlptrain.losses import task as task_module
from mlptrain.schemas import LossConfig


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    for n, k in ((50, 3), (10_000, 10)):
        meta = {"name": "b", "task": "classification", "n_outputs": k, "class_names": [str(c) for c in range(k)]}
        task = build_task(LossConfig(name="cross_entropy"), meta, torch.zeros(k), torch.ones(k))
        out, y = torch.randn(n, k, generator=g), torch.arange(n) % k
        full = median_s(lambda: task.metrics(out, y, "val"), 200, warmup=True)
        saved = task_module.macro_scores, task_module.Task._defined
        task_module.macro_scores, task_module.Task._defined = (lambda *a: {}), (lambda *a: False)
        try:
            old = median_s(lambda: task.metrics(out, y, "val"), 200, warmup=True)
        finally:
            task_module.macro_scores, task_module.Task._defined = saved
        print(f"{n:>6} rows, {k:>2} classes: all metrics {full * 1e3:.3f} ms, without the new ones "
              f"{old * 1e3:.3f} ms, ratio {full / old:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
