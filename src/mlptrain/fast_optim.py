"""Optimizers that do not import the compiler stack.

Every ``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad``,
``state_dict`` and ``load_state_dict`` in ``torch._disable_dynamo`` and ``step``
in ``_use_grad_for_differentiable``; both import ``torch._dynamo`` on first call
so that torch.compile can skip or split those methods.  That import takes about
as long as ``import torch`` itself (~1.4 s here), for guards that do nothing
unless the optimizer's own methods are being traced, which mlptrain never does
(``trainer.compile`` compiles the model only).

:func:`without_compiler_guards` returns a subclass of an optimizer class whose
methods are the undecorated originals: same update rule, same state dict, same
step hooks and profiler ranges, but no ``torch._dynamo`` import.  It recognises
the wrappers by their code objects; if torch ever changes them, the class is
returned unchanged (the optimisation is lost, nothing breaks).
"""

from __future__ import annotations

import functools

import torch
from torch.optim import optimizer as _optimizer

_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


@functools.cache
def _wrapper_codes():
    """Code objects of torch's two wrappers (every wrapped function shares them)."""
    disable = getattr(torch, "_disable_dynamo", None)
    use_grad = getattr(_optimizer, "_use_grad_for_differentiable", None)
    if disable is None or use_grad is None:
        return None, None
    return disable(lambda: None).__code__, use_grad(lambda self: None).__code__


def _unwrap(fn, code):
    """The function inside the first wrapper in ``fn``'s ``__wrapped__`` chain whose code is ``code``."""
    while fn is not None:
        if getattr(fn, "__code__", None) is code:
            return getattr(fn, "__wrapped__", None)
        fn = getattr(fn, "__wrapped__", None)
    return None


@functools.cache
def without_compiler_guards(cls: type) -> type:
    """``cls`` with its torch.compile guards removed (see the module docstring), or ``cls`` itself."""
    disable_code, use_grad_code = _wrapper_codes()
    if disable_code is None:
        return cls
    overrides = {}
    for name in _GUARDED:
        raw = _unwrap(getattr(cls, name, None), disable_code)
        if raw is not None:
            overrides[name] = raw
    raw_step = _unwrap(getattr(cls, "step", None), use_grad_code)
    if raw_step is not None:

        @functools.wraps(raw_step)
        def step(self, closure=None):
            # What _use_grad_for_differentiable does, minus its two torch._dynamo.graph_break() calls.
            with torch.set_grad_enabled(self.defaults["differentiable"]):
                return raw_step(self, closure)

        overrides["step"] = step
    if set(overrides) != {*_GUARDED, "step"}:
        return cls  # not the layout we know: keep torch's class
    return type(cls.__name__, (cls,), {**overrides, "__doc__": cls.__doc__})
