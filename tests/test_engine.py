"""The engine's guards: a NaN loss stops with a message and keeps the best; Ctrl-C keeps the best."""
from __future__ import annotations

import pytest
import torch

from deepprobe import engine as E

EPS = 8 / 255


@pytest.fixture()
def param(cat):
    return E.Perturbation(cat, EPS, "linf", generator=torch.Generator().manual_seed(0))


def test_nan_guard_stops_with_a_message_and_keeps_the_best(lite0, cat, param):
    target = lite0.class_index("ostrich")
    ce = E.cross_entropy(target)
    calls = []

    def poisoned(fwd):
        calls.append(1)
        loss = ce(fwd)
        return loss * float("nan") if len(calls) > 3 else loss
    res = E.optimize(lite0, param, E.Objective(poisoned, "nan after 3", needs_logits=True), steps=10, lr=1 / 255,
                     optimizer="sign", check_every=1)
    assert res.stopped == "nan" and res.steps == 4
    assert "nan" in res.message.lower() and "best" in res.message
    assert torch.isfinite(res.images).all() and torch.isfinite(res.best_loss).all()
    # The best kept is one of the finite steps: its loss is what the model gives on it now.
    again = float(ce(E.forward(lite0, res.images)))
    assert abs(again - float(res.best_loss[0])) < 1e-3
    assert again <= min(res.losses[:3]) + 1e-3
    assert float((res.images - cat).abs().max()) <= EPS + 1e-6


def test_ctrl_c_stops_and_keeps_the_best(lite0, cat, param):
    target = lite0.class_index("ostrich")

    def callback(step, total, loss, fwd):
        if step == 3:
            raise KeyboardInterrupt
    res = E.optimize(lite0, param, E.cross_entropy(target), steps=20, lr=1 / 255, optimizer="sign",
                     callback=callback, check_every=1)
    assert res.stopped == "interrupted" and res.interrupted and res.steps == 3
    assert "interrupted" in res.message and len(res.losses) == 3
    assert float(res.best_loss[0]) == pytest.approx(min(res.losses), abs=1e-4)
    assert float((res.images - cat).abs().max()) <= EPS + 1e-6


def test_attack_reports_an_interruption_with_its_images(lite0, cat):
    import deepprobe as dp

    def callback(step, total, loss, fwd):
        if step == 2:
            raise KeyboardInterrupt
    res = dp.attack(lite0, cat, "ostrich", steps=20, callback=callback)
    assert res.stopped == "interrupted" and res.steps.tolist() == [2]
    assert res.images.shape == cat.shape and torch.isfinite(res.images).all()
    assert float(res.linf[0]) <= EPS + 1e-6
