"""What TensorBoard shows beyond scalars: pictures of the model's predictions and a look inside it.

Called by the trainer at epoch end, never inside the step loop, and written to the run's loggers
(those that take images and histograms: TensorBoard, not CSV; with none of them, nothing is drawn):

* pictures (``trainer.image_every_n_epochs``): the decision boundary of 2-D classification
  sets, the 1-D regression fit (with the +-2 sigma band of ``Task.mean_and_std``), the
  validation confusion matrix and, for image sets, the most confident validation mistakes;
  after training, the same two for the test split on the best weights (``test/*``);
* inside the network (``trainer.histogram_every_n_epochs``): per-layer weight and gradient
  histograms, per-layer gradient norms, activation histograms and the fraction of dead ReLU
  units.  Gradients and activations come from one extra forward/backward pass, in eval mode,
  over a fixed sample of the training split; ``torch.autograd.grad`` leaves the optimizer's
  ``.grad`` alone and eval mode draws no random numbers, so the run's numbers are the same
  with or without this.

Frequencies: ``N > 0`` every N epochs and after the last; ``0`` (the default) only after the last
epoch (histograms: also before the first); ``-1`` never.  The gradient norms and dead-ReLU fractions
are scalars, logged before training and about :data:`SCALAR_POINTS` times a run (every epoch of a
run of up to 10 epochs) whenever histograms are on: a curve, not two points, at a few percent of the
run (benchmarks/diagnostics_cost.py); the histograms
themselves (``weights/*``: each layer's weights, their gradients and its activations, a group that
sorts after ``train`` and ``val``) follow ``trainer.histogram_every_n_epochs``.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from mlptrain import images
from mlptrain.model import ACTIVATIONS

log = logging.getLogger("mlptrain")

SAMPLE_ROWS = 1024  # rows of the training split used for gradients and activations
SCALAR_POINTS = 10  # grad_norm/dead_relu points a run (benchmarks/diagnostics_cost.py: ~4% of a default run)


def layer_names(model: nn.Module) -> dict[nn.Module, str]:
    """Readable names for the MLP's modules: ``layer1`` ... ``output`` (norms: ``layer1_norm``)."""
    body = getattr(model, "body", model)
    seq = getattr(body, "layers", body)
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    names, k = {}, 0
    for m in seq:
        if isinstance(m, nn.Linear):
            k += 1
            names[m] = "output" if m is linears[-1] else f"layer{k}"
        elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
            names[m] = f"layer{k}_norm"
        elif isinstance(m, tuple(ACTIVATIONS.values())):
            names[m] = f"layer{k}"
    return names


def _due(every: int, epoch: int, boundary: bool) -> bool:
    """``every`` > 0: each multiple of it and the boundaries; 0: the boundaries only; < 0: never."""
    return every >= 0 and (boundary or (every > 0 and epoch % every == 0))


class Diagnostics:
    """``parts``: what it draws from (``mlptrain.train.setup.Parts``, or a Trainer, which exposes the same
    attributes: cfg, meta, task, model, data, device, val, run); the outputs of the splits the loop has
    just evaluated are handed to each call, so they are not computed twice."""

    def __init__(self, parts, logger):
        self.t, self.logger = parts, logger  # a Logger (mlptrain.loggers.base): the Fanout, or one logger
        self.evaluated: tuple[torch.Tensor, torch.Tensor] | None = None  # (inputs, outputs) on these weights
        cfg = parts.cfg
        self.image_every, self.hist_every = cfg.image_every_n_epochs, cfg.histogram_every_n_epochs
        meta = parts.meta
        self.classification = parts.task.task == "classification"
        self.in_features = meta["in_features"]
        self.images_of_inputs = self.classification and images.is_image_shape(meta["input_shape"])
        # The bare network (a DistributedDataParallel wrapper would sync gradients on our backward).
        self.model = getattr(parts.model, "module", parts.model)
        self.names = layer_names(self.model)
        n = min(SAMPLE_ROWS, len(parts.data.x_train))
        self.sample = (parts.data.x_train[:n].to(parts.device), parts.data.y_train[:n].to(parts.device))
        self.done: set[tuple[str, int]] = set()
        self.seconds = 0.0  # time spent here, reported at the end

    @classmethod
    def for_trainer(cls, parts, logger):
        """None when both are off, or no logger would keep them (``trainer.loggers=[csv]``)."""
        cfg = parts.cfg
        on = cfg.image_every_n_epochs >= 0 or cfg.histogram_every_n_epochs >= 0
        return cls(parts, logger) if on and logger.takes_media else None

    # --------------------------------------------------------------------------- hooks
    def epoch_end(self, epoch: int, last: bool = False, evaluated=None) -> None:
        """Called before training (``epoch`` 0), after each epoch, and once more after the last.
        ``evaluated``: (inputs, outputs) of the validation split the loop has just evaluated."""
        t0 = time.perf_counter()
        self.evaluated = evaluated
        if self.hist_every >= 0:
            hist = _due(self.hist_every, epoch, last or epoch == 0) and ("hist", epoch) not in self.done
            # about SCALAR_POINTS points a run (every epoch up to that many epochs): a curve, at a few % of it
            every = max(1, self.t.max_epochs // SCALAR_POINTS)
            # logged by the epoch's own call, before its checkpoint (the final epoch's too), never by the call
            # after training: a run killed at its end and resumed then logs them once
            boundary = epoch == 0 or epoch >= self.t.max_epochs
            scalars = not last and _due(every, epoch, boundary) and ("scalars", epoch) not in self.done
            if hist or scalars:
                self.done.add(("scalars", epoch))
                if hist:
                    self.done.add(("hist", epoch))
                self.inside(epoch, histograms=hist, scalars=scalars)
        if epoch > 0 and _due(self.image_every, epoch, last) and ("img", epoch) not in self.done:
            self.done.add(("img", epoch))
            self.pictures(epoch)
        self.seconds += time.perf_counter() - t0

    def test_end(self, step: int, evaluated, train_time: float) -> None:
        """After testing (the model holds the best weights): the test split's pictures.
        ``evaluated``: (inputs, outputs) of the test split, the device copy the loop evaluated."""
        if self.image_every >= 0 and self.classification:
            t0 = time.perf_counter()
            self.evaluated = evaluated
            self.classifier_pictures("test", evaluated[0], self.t.data.y_test, step)
            self.seconds += time.perf_counter() - t0
        log.info("diagnostics: %.2fs in total (training %.2fs)", self.seconds, train_time)

    # --------------------------------------------------------------------------- model calls
    @torch.inference_mode()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        last = self.evaluated
        if last is not None and last[0] is x:  # the split the trainer has just evaluated, on these weights
            return last[1]
        model, bs = self.model, self.t.cfg.eval_batch_size
        was_training = model.training
        model.eval()
        dev = self.t.device
        out = torch.cat([model(x[i : i + bs].to(dev)).float() for i in range(0, len(x), bs)])
        model.train(was_training)
        return out

    # --------------------------------------------------------------------------- pictures
    def pictures(self, step: int) -> None:
        task, data = self.t.task, self.t.data
        if self.classification and self.in_features == 2:
            k = len(data.class_names)
            proba = lambda p: task.probabilities(self.outputs(p)).cpu()  # noqa: E731
            img = images.decision_boundary(proba, data.x_train, data.y_train, k, names=data.class_names)
            self.logger.image("images/decision_boundary", img, step)
        if not self.classification and self.in_features == 1:
            img = images.regression_fit(lambda p: task.mean_and_std(self.outputs(p)), data.x_train, data.y_train)
            self.logger.image("images/regression_fit", img, step)
        if self.classification:
            self.classifier_pictures("val", *self.t.val, step)  # the device copy evaluate() just ran on

    def classifier_pictures(self, split: str, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        p = self.t.task.probabilities(self.outputs(x)).cpu()
        conf, pred = p.max(1)
        y = y.cpu()
        k = p.shape[1]
        cm = images.confusion_matrix(y, pred, k)
        self.logger.image(f"{split}/confusion_matrix", images.confusion_image(cm, self.t.data.class_names), step)
        if not self.images_of_inputs:
            return
        grid, rows = images.misclassified_grid(x, y, pred, conf, self.t.meta["input_shape"])
        if grid is None:
            return
        self.logger.image(f"{split}/misclassified", grid, step)
        names = self.t.data.class_names or [str(i) for i in range(k)]
        lines = ["tile | index | true | predicted | confidence", "---|---|---|---|---"]
        lines += [f"{n} | {i} | {names[a]} | {names[b]} | {c:.3f}" for n, (i, a, b, c) in enumerate(rows)]
        self.logger.text(f"{split}/misclassified", "\n".join(lines), step)

    # --------------------------------------------------------------------------- inside the network
    def inside(self, step: int, histograms: bool = True, scalars: bool = True) -> None:
        """Gradient norms and dead ReLUs as scalars; with ``histograms``, the weights', gradients' and
        activations' histograms too."""
        model, task, want_scalars = self.model, self.t.task, scalars
        acts: dict[str, torch.Tensor] = {}

        def keep(name):
            def hook(_module, _inputs, output):
                acts[name] = output.detach()

            return hook

        relu = self.t.run.model.activation == "relu"
        handles = [
            m.register_forward_hook(keep(n))
            for m, n in self.names.items()
            if isinstance(m, tuple(ACTIVATIONS.values())) and (histograms or relu)
        ]
        was_training = model.training
        model.eval()
        try:
            x, y = self.sample
            loss = task.loss(model(x).float(), y)
            params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        by_module = {id(p): self.names.get(m) for m in self.names for p in m.parameters(recurse=False)}
        norms: dict[str, torch.Tensor] = {}
        for (pname, p), g in zip(params, grads):
            layer = by_module.get(id(p))
            if layer is None:
                continue
            tag = f"weights/{layer}.{pname.rsplit('.', 1)[-1]}"
            if histograms:
                self.logger.histogram(tag, p, step)
            if g is not None:
                if histograms:
                    self.logger.histogram(f"{tag}.grad", g, step)
                norms[layer] = norms.get(layer, 0) + g.float().pow(2).sum()
        scalars = {f"grad_norm/{k}": v.sqrt() for k, v in norms.items()}
        if norms:
            scalars["grad_norm/total"] = torch.stack(list(norms.values())).sum().sqrt()
        for name, a in acts.items():
            if histograms:
                self.logger.histogram(f"weights/{name}.activations", a, step)
            if relu:  # a unit is dead when no input of the sample switches it on
                scalars[f"dead_relu/{name}"] = (a.reshape(len(a), -1) <= 0).all(0).float().mean()
        if scalars and want_scalars:
            values = torch.stack([v.detach().float() for v in scalars.values()]).tolist()  # one transfer
            self.logger.scalars(dict(zip(scalars, values)), step)
