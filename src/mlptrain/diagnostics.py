"""What TensorBoard shows beyond scalars: pictures of the model's predictions and a look inside it.

Called by the trainer at epoch end, never inside the step loop, and written to the run's loggers
(those that take images and histograms: TensorBoard, not CSV; with none of them, nothing is drawn):

* pictures (``trainer.image_every_n_epochs``): the decision boundary of 2-D classification
  sets, the 1-D regression fit (with the +-2 sigma band of ``Task.mean_and_std``), the
  validation confusion matrix and, for image sets, the most confident validation mistakes;
  after training, the same two for the test split on the best weights (``test/*``);
* inside the network (``trainer.histogram_every_n_epochs``): per-layer weight and gradient
  histograms, per-layer gradient norms, activation histograms and the fraction of dead ReLU
  units.  The gradients are those of the epoch's last training step (still in ``.grad``; before
  training, those of one batch of the training split by ``torch.autograd.grad``, which leaves
  ``.grad`` alone); a ReLU unit is dead when no row of the validation split switches it on (counted
  by forward hooks armed for the epoch's own validation pass only); activations are those of a fixed sample
  of the training split, in eval mode.  None of this draws random numbers or touches the optimizer,
  so the run's numbers are the same with or without it.

Frequencies: ``N > 0`` every N epochs and after the last; ``0`` (the default) only after the last
epoch (histograms: also before the first); ``-1`` never.  The gradient norms and dead-ReLU fractions
are scalars, logged before training and after every epoch whenever histograms are on (``-1``: off),
at a few percent of the run (``benchmarks/diagnostics_cost.py``, in docs/loggers.md); the histograms
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
    """``parts``: what it draws from (``mlptrain.training.setup.Parts``, or a Trainer, which exposes the same
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
        # The parameters by layer (their gradients' norms are summed per layer) and the activations.
        self.params, self.layers, self.layer_index = [], [], []
        for m, layer in self.names.items():
            for pname, prm in m.named_parameters(recurse=False):
                if prm.requires_grad:
                    if layer not in self.layers:
                        self.layers.append(layer)
                    self.params.append((layer, pname, prm))
                    self.layer_index.append(self.layers.index(layer))
        self.activations = {m: n for m, n in self.names.items() if isinstance(m, tuple(ACTIVATIONS.values()))}
        self.relu = parts.run.model.activation == "relu"
        # Dead ReLUs are counted by hooks during each epoch's validation pass (a compare and an ``any``
        # per batch), armed by before_validation and removed at epoch end; without the scalars (histograms
        # off) there are none, and a compiled model gets none (they would be traced into its graph): it is
        # counted by a pass of its own.
        self.alive: dict[str, torch.Tensor] = {}  # per ReLU layer: which units some validation row switched on
        self.armable = self.relu and self.hist_every >= 0 and not cfg.compile
        self.handles: list = []  # armed for a validation pass only: a hook costs every training step ~35 us
        self.counting = False

    def before_validation(self) -> None:
        """The loop is about to validate: count the ReLU units its rows switch on (for this epoch's
        ``dead_relu/*``); the hooks are removed again by :meth:`epoch_end`."""
        if self.armable and not self.handles:
            self.alive, self.handles, self.counting = {}, self._arm(), True

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
        self.counting = False  # our own passes (pictures, the sample) are no validation rows
        if not self.handles:  # not counted during validation (none this epoch, or a compiled model)
            self.alive = {}
        if self.hist_every >= 0:
            hist = _due(self.hist_every, epoch, last or epoch == 0) and ("hist", epoch) not in self.done
            # the scalars every epoch, by the epoch's own call, before its checkpoint (the final epoch's
            # too), never by the call after training: a run killed at its end and resumed logs them once
            scalars = not last and ("scalars", epoch) not in self.done
            if hist or scalars:
                self.done.add(("scalars", epoch))
                if hist:
                    self.done.add(("hist", epoch))
                self.inside(epoch, histograms=hist, scalars=scalars)
        if epoch > 0 and _due(self.image_every, epoch, last) and ("img", epoch) not in self.done:
            self.done.add(("img", epoch))
            self.pictures(epoch)
        self._disarm()
        self.seconds += time.perf_counter() - t0

    def _disarm(self) -> None:
        for h in self.handles:
            h.remove()
        self.alive, self.handles, self.counting = {}, [], False

    def test_end(self, step: int, evaluated, train_time: float) -> None:
        """After testing (the model holds the best weights): the test split's pictures.
        ``evaluated``: (inputs, outputs) of the test split, the device copy the loop evaluated."""
        if self.image_every >= 0 and self.classification:
            t0 = time.perf_counter()
            self.evaluated = evaluated
            self.classifier_pictures("test", evaluated[0], self.t.data.y_test, step)
            self.seconds += time.perf_counter() - t0
        self._disarm()
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
    def _count_alive(self, name: str):
        def hook(module, _inputs, output):
            if self.counting and not module.training:  # validation (and our own passes), never a training step
                on = (output.detach().reshape(len(output), -1) > 0).any(0)
                seen = self.alive.get(name)
                self.alive[name] = on if seen is None else seen | on

        return hook

    def _arm(self) -> list:
        return [m.register_forward_hook(self._count_alive(n)) for m, n in self.activations.items()]

    def _dead_fractions(self) -> dict[str, torch.Tensor]:
        """Per ReLU layer, the fraction of units no validation row switches on: counted during the
        epoch's own validation pass when the hooks are armed, else by one pass here."""
        if not self.alive or len(self.alive) < len(self.activations):
            self.alive = {}
            handles = [] if self.handles else self._arm()
            counting, self.counting = self.counting, True
            try:
                self._forward_all(self.t.val[0])
            finally:
                self.counting = counting
                for h in handles:
                    h.remove()
        dead = {f"dead_relu/{n}": (~a).float().mean() for n, a in self.alive.items()}
        self.alive = {}
        return dead

    @torch.inference_mode()
    def _forward_all(self, x: torch.Tensor) -> None:
        model, bs = self.model, self.t.cfg.eval_batch_size
        was_training = model.training
        model.eval()
        try:
            for i in range(0, len(x), bs):
                model(x[i : i + bs])
        finally:
            model.train(was_training)

    def _gradients(self) -> list[torch.Tensor | None]:
        """The gradients of the last training step (still in ``.grad``: the next step clears them);
        before any step, those of one batch-sized slice of the sample, by ``torch.autograd.grad``,
        which leaves ``.grad`` alone (and eval mode draws no random numbers)."""
        grads = [p.grad for _, _, p in self.params]
        if any(g is not None for g in grads):
            return grads
        model, (x, y) = self.model, self.sample
        n = max(1, min(len(x), self.t.cfg.batch_size))
        was_training = model.training
        model.eval()
        try:
            loss = self.t.task.loss(model(x[:n]).float(), y[:n])
            return list(torch.autograd.grad(loss, [p for _, _, p in self.params], allow_unused=True))
        finally:
            model.train(was_training)

    def _activations(self) -> dict[str, torch.Tensor]:
        """Each activation layer's outputs on the sample (for their histograms)."""
        acts: dict[str, list[torch.Tensor]] = {}

        def keep(name):
            def hook(_module, _inputs, output):
                acts.setdefault(name, []).append(output.detach())

            return hook

        handles = [m.register_forward_hook(keep(n)) for m, n in self.activations.items()]
        counting, self.counting = self.counting, False
        try:
            self._forward_all(self.sample[0])
        finally:
            self.counting = counting
            for h in handles:
                h.remove()
        return {n: torch.cat(a) for n, a in acts.items()}

    def inside(self, step: int, histograms: bool = True, scalars: bool = True) -> None:
        """Gradient norms and dead ReLUs as scalars; with ``histograms``, the weights', gradients' and
        activations' histograms too.  The scalars cost a few small reductions: the gradients are the
        last training step's, the ReLU units are counted during validation."""
        grads = self._gradients()
        present = [(i, g) for i, g in enumerate(grads) if g is not None]
        values: dict[str, torch.Tensor] = {}
        if scalars and present:
            norms = torch.stack(torch._foreach_norm([g.float() for _, g in present]))  # one kernel per dtype
            layer = torch.tensor([self.layer_index[i] for i, _ in present], device=norms.device)
            squares = norms.square()
            per = torch.zeros(len(self.layers), device=norms.device, dtype=squares.dtype).index_add_(0, layer, squares)
            used = sorted({self.layer_index[i] for i, _ in present})
            values.update({f"grad_norm/{self.layers[k]}": per[k].sqrt() for k in used})
            values["grad_norm/total"] = squares.sum().sqrt()
        if scalars and self.relu:
            values.update(self._dead_fractions())
        if histograms:
            for (layer, pname, p), g in zip(self.params, grads):
                tag = f"weights/{layer}.{pname}"
                self.logger.histogram(tag, p, step)
                if g is not None:
                    self.logger.histogram(f"{tag}.grad", g, step)
            for name, a in self._activations().items():
                self.logger.histogram(f"weights/{name}.activations", a, step)
        if values:
            floats = torch.stack([v.detach().float() for v in values.values()]).tolist()  # one transfer
            self.logger.scalars(dict(zip(values, floats)), step)
