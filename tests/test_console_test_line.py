"""The console's test line shows each number once: the nll is left out where it is the loss."""

from __future__ import annotations

import logging


def test_the_test_line_leaves_out_an_nll_equal_to_the_loss(train, caplog):
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        m = train()  # cross-entropy: its loss is the nll
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("test: ")]
    assert m["test"]["nll"] == m["test"]["loss"]  # metrics.json keeps both
    assert " loss " in f" {line[6:]}" and " nll " not in line and " acc " in line, line


def test_an_nll_that_differs_from_the_loss_is_shown(train, caplog):
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        m = train("loss.label_smoothing=0.1")  # the smoothed loss is no longer the nll
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("test: ")]
    assert m["test"]["nll"] != m["test"]["loss"] and " nll " in line, line
