"""The run figure (curves.png): no empty slot but the last row's tail, a measure constant over the run named in the
caption instead of a flat panel, counts on an integer axis."""

from __future__ import annotations

import math

from grokpipe.run.figures import plot_curves, thresholds_of


def test_the_run_figure_has_no_empty_slot_and_names_constant_measures_in_its_caption(tmp_path):
    rows = [
        {"epoch": e, "train_loss": 2 / e, "val_loss": 3 / e, "train_acc": min(1, e / 50), "val_acc": e / 100,
         "weight_norm": 40 - e / 10, "fourier_gini": e / 200, "fourier_n_key": 26 - e // 20, "sc_share": 0.0,
         "zero_loss_share": 0.0, "restricted_loss": 4 / e, "elapsed": e / 10}
        for e in range(10, 101, 10)
    ]  # fmt: skip
    drawn = plot_curves(rows, tmp_path / "c.png", "t", 80, 30, {"fourier_gini": 60}, "epoch", {"fourier_gini": 0.3})
    assert drawn["panels"] == ["loss", "acc", "weight_norm", "fourier_gini", "fourier_n_key", "restricted_loss"]
    rows_, per_row = drawn["grid"]
    assert per_row == 4 and rows_ == math.ceil(6 / 4)  # 6 panels fill 2 rows of 4 but for the last row's tail
    assert drawn["caption"] == "constant over the run: sc_share = 0, zero_loss_share = 0"
    assert drawn["integer"] == ["fourier_n_key"] and (tmp_path / "c.png").stat().st_size > 10_000


def test_thresholds_come_from_the_measures_config():
    measures = {"fourier": {"thresholds": {"fourier_gini": {"above": 0.2}}}, "loss": {"thresholds": {}}}
    assert thresholds_of(measures) == {"fourier_gini": 0.2}
