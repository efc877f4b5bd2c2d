"""Start-up cost: what a run imports, and optimizers without torch.compile's guards."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from mlptrain.fast_optim import without_compiler_guards

PROBE = """
import json, sys
sys.argv = ["mlptrain", *json.loads(sys.argv[1])]
from mlptrain.cli import main
try:
    main()
except SystemExit as e:
    if e.code: raise
print("MODULES " + json.dumps({m: m in sys.modules for m in ("torch", "torch._dynamo", "torchvision")}))
"""


def imported(tmp_path, *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.rsplit("MODULES ", 1)[1])


def test_a_run_imports_neither_the_compiler_stack_nor_torchvision(tmp_path):
    # torch._dynamo (~1.4 s) came with the first optimizer, torchvision (~1.5 s) with every checkpoint.
    mods = imported(tmp_path, "trainer.epochs=2", "dataset.n_samples=120", "model.hidden=[8]", "trainer.progress=none")
    assert mods == {"torch": True, "torch._dynamo": False, "torchvision": False}
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def test_help_does_not_import_torch(tmp_path):
    assert imported(tmp_path, "--help") == {"torch": False, "torch._dynamo": False, "torchvision": False}


def _train(cls, steps=4, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    opt = cls(model.parameters(), lr=0.01, **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(3, 5)).square().mean().backward()
        opt.step()
        sched.step()
    return model, opt


@pytest.mark.parametrize(
    "name, kw",
    [
        ("Adam", {"fused": True}),
        ("Adam", {"foreach": True}),
        ("AdamW", {"fused": True}),
        ("SGD", {"momentum": 0.9, "fused": True}),
        ("RMSprop", {"foreach": True}),
        ("Adagrad", {}),
        ("NAdam", {}),
    ],
)
def test_guardless_optimizer_is_the_same_optimizer(name, kw):
    torch_cls = getattr(torch.optim, name)
    cls = without_compiler_guards(torch_cls)
    assert cls is not torch_cls and issubclass(cls, torch_cls) and cls.__name__ == name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. the scheduler's "lr_scheduler.step() before optimizer.step()"
        ours, opt = _train(cls, **kw)
    ref, ref_opt = _train(torch_cls, **kw)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    state = opt.state_dict()
    assert repr(state) == repr(ref_opt.state_dict())
    torch_cls(ref.parameters(), lr=0.01, **kw).load_state_dict(state)  # checkpoints load into torch's class


def test_step_hooks_still_run():
    calls = []
    model = torch.nn.Linear(2, 1)
    opt = without_compiler_guards(torch.optim.Adam)(model.parameters())
    opt.register_step_post_hook(lambda *a: calls.append(1))
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert calls == [1]


def test_unknown_layouts_are_left_alone():
    assert without_compiler_guards(torch.optim.LBFGS) is torch.optim.LBFGS  # its step is not wrapped the usual way


def test_quick_help_renders_the_template_with_overrides(tmp_path):
    from conftest import mlptrain

    r = mlptrain("dataset=moons", "model.hidden=[3]", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "== Config groups (choose with group=option) ==" in r.stdout and "Examples:" in r.stdout
    assert "name: moons" in r.stdout and "- 3" in r.stdout and "hydra:" not in r.stdout
    bad = mlptrain("nosuch=1", "--help", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "mlptrain: error: nosuch: unknown key; valid keys in the config: cv, dataset, experiment, hparams_search, "
        "loss, model, name, optim, scheduler, seed, trainer"
    )


def test_sweep_checks_every_structure_before_its_first_job(tmp_path):
    from conftest import mlptrain

    # moons composes with dataset.n_samples; mnist does not: found before any job runs, in one line
    r = mlptrain("-m", "dataset=moons,mnist", "dataset.n_samples=100", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "mlptrain: error: dataset.n_samples: unknown key; valid keys in dataset (dataset=mnist): name, data_dir, "
        "download, val_fraction, seed"
    )
    assert not (tmp_path / "outputs").exists()


def test_sweeps_run_on_the_sweeper_that_composes_each_job_once(tmp_path):
    from conftest import TINY, mlptrain

    r = mlptrain("-m", *TINY, "seed=0,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/*/.hydra/hydra.yaml"))
    assert len(jobs) == 2
    assert "_target_: hydra_plugins.mlptrain_sweeper.MlptrainSweeper" in jobs[0].read_text()


def test_pictures_reuse_the_evaluation_outputs(make_cfg, tmp_path):
    # the confusion matrices of val and test come from the outputs evaluate() has just computed
    from conftest import TINY
    from mlptrain.config import parse
    from mlptrain.training import Trainer

    trainer = Trainer(parse(make_cfg(*TINY, "trainer.image_every_n_epochs=0")), tmp_path)
    rows = []
    trainer.model.register_forward_pre_hook(lambda _m, args: rows.append(len(args[0])))
    train_epoch = trainer.train_epoch

    def marked(*args, **kwargs):  # the epoch-0 diagnostics (before training) make passes of their own
        rows.append("training")
        return train_epoch(*args, **kwargs)

    trainer.train_epoch = marked
    trainer.fit()
    rows = rows[rows.index("training") + 1 :]
    n_val, n_test = len(trainer.data.y_val), len(trainer.data.y_test)
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= _image_tags(tmp_path)
    assert rows.count(n_val) + (rows.count(n_test) if n_test != n_val else 0) == 2  # one val, one test pass


def _image_tags(run_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    return set(acc.Tags()["images"])
