"""Figures from the results database of real sweeps: every figure is written, in every format, and is not blank."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from helpers import run_script, script

from grokpipe.results.database import build
from grokpipe.results.figures import write_figures

# the results database, figure and predict tests run on one xdist worker (pytest -n, --dist loadgroup): they
# read the same two sweeps (the results_root fixture), made once
pytestmark = pytest.mark.xdist_group("results_sweeps")

AGGREGATE = ("phase_diagram", "grok_vs_ratio", "grok_gap", "hidden_progress")
PER_EXPERIMENT = ("curves", "weight_norm", "measures")
EXPERIMENTS = ("fast_grok", "sweep-multirun_tiny")


@pytest.fixture(scope="module")
def db(results_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("figdb") / "experiments.db"
    build(results_root, path)
    return path


def ink(path) -> float:
    """Pixel spread of an image: about 0 for a blank canvas, well above for axes, curves and text."""
    return float(np.asarray(matplotlib.image.imread(path))[..., :3].std())


def test_every_figure_is_written_and_not_blank(db, tmp_path):
    written = write_figures(db, tmp_path)
    names = {p.name for p in written}
    expected = {f"{n}.png" for n in AGGREGATE} | {f"{k}_{e}.png" for k in PER_EXPERIMENT for e in EXPERIMENTS}
    assert names == expected and {p.name for p in tmp_path.iterdir()} == expected
    for path in written:
        assert path.stat().st_size > 10_000, path.name
        assert ink(path) > 0.05, path.name
    # the two experiments' curves are different drawings, not one picture twice
    a, b = (matplotlib.image.imread(tmp_path / f"curves_{e}.png") for e in EXPERIMENTS)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_a_blank_canvas_fails_the_ink_check(tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 3))
    fig.savefig(tmp_path / "blank.png")
    plt.close(fig)
    assert ink(tmp_path / "blank.png") < 0.01


def test_one_experiment_in_svg_and_pdf(db, tmp_path):
    r = run_script("plot", db, "--out", tmp_path / "svg", "--format", "svg", "--experiment", "fast_grok")
    assert r.returncode == 0, r.stderr
    expected = [*(f"{n}.svg" for n in AGGREGATE), *(f"{k}_fast_grok.svg" for k in PER_EXPERIMENT)]
    assert sorted(p.name for p in (tmp_path / "svg").iterdir()) == sorted(expected)
    assert r.stdout.splitlines() == [str(tmp_path / "svg" / name) for name in expected]
    svg = (tmp_path / "svg" / "curves_fast_grok.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and svg.count("<path") > 10 and "fast_grok" in svg
    written = write_figures(db, tmp_path / "pdf", fmt="pdf", experiment="sweep-multirun_tiny")
    assert all(p.read_bytes().startswith(b"%PDF") and p.stat().st_size > 5_000 for p in written)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--experiment", "nope"], "experiment 'nope' is not in"),
        (["--format", "jpg"], "argument --format: invalid choice: 'jpg'"),
    ],
)
def test_bad_arguments_are_one_line(db, tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        script("plot").main([str(db), "--out", str(tmp_path / "f"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "f").exists()


def test_a_missing_or_foreign_database_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        script("plot").main([str(tmp_path / "none.db"), "--out", str(tmp_path / "f")])
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'none.db'}: no such database (build it with scripts/build_db.py)"
    ]
    (tmp_path / "junk.db").write_text("not sqlite")
    with pytest.raises(ValueError, match="not a grokpipe results database"):
        write_figures(tmp_path / "junk.db", tmp_path / "f")
