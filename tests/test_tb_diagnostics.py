"""The diagnostics' scalars are curves: logged after every epoch of any run, the histograms at the defaults
only before and after; and the counting hooks leave the model with the run."""

from __future__ import annotations


def test_grad_norms_and_dead_relus_every_epoch_histograms_at_the_ends(train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train("trainer.epochs=20", "model.hidden=[8,8]", out=out)  # the old code: every 2nd epoch here
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    every = list(range(21))
    for tag in ("grad_norm/total", "grad_norm/layer1", "grad_norm/output", "dead_relu/layer1", "dead_relu/layer2"):
        assert [e.step for e in acc.Scalars(tag)] == every, tag
    assert all(e.value > 0 for e in acc.Scalars("grad_norm/total"))
    assert all(0 <= e.value <= 1 for e in acc.Scalars("dead_relu/layer1"))
    assert [e.step for e in acc.Histograms("weights/layer1.weight.grad")] == [0, 20]


def test_the_counting_hooks_are_armed_for_validation_only(make_cfg, tmp_path):
    from conftest import TINY
    from mlptrain.config import parse
    from mlptrain.training import Trainer

    trainer = Trainer(parse(make_cfg(*TINY, "trainer.epochs=2", "trainer.checkpoint=false")), tmp_path)
    seen = []
    relu = next(m for m in trainer.model.modules() if type(m).__name__ == "ReLU")
    original = trainer.outputs.before_validation

    def spy():
        original()
        seen.append(len(relu._forward_hooks))

    trainer.outputs.before_validation = spy
    trainer.fit()
    assert seen == [1, 1]  # armed for each epoch's validation pass
    assert len(relu._forward_hooks) == 0  # and gone after the run (and during every training step)
