"""scripts/predict.py on real runs: the true answer, the grokked model's answer on held-out pairs, S5 and division,
and one-line errors for bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import compose_cfg, run_script, script
from omegaconf import OmegaConf

from grokpipe.tasks import build_task

# the results database, figure and predict tests run on one xdist worker (pytest -n, --dist loadgroup): they
# read the same two sweeps (the results_root fixture), made once
pytestmark = pytest.mark.xdist_group("results_sweeps")

LINE = re.compile(
    r"^(?P<q>.+): model says (?P<guess>\d+) \(confidence (?P<conf>[01]\.\d{3})\), "
    r"true answer (?P<truth>\d+) (?P<mark>[✓✗]) \((?P<split>training pair|held-out pair)\)$"
)


@pytest.fixture(scope="module")
def root(results_root):
    return results_root


@pytest.fixture(scope="module")
def grokked(root):
    """The first grokked run of the fast_grok sweep."""
    runs = sorted(d for d in (root / "multirun" / "grok").iterdir() if (d / "summary.json").exists())
    done = [d for d in runs if json.loads((d / "summary.json").read_text())["status"] == "grokked"]
    assert done
    return done[0]


def ask(run_dir, a, b, capsys) -> re.Match:
    assert script("predict").main([str(run_dir), str(a), str(b)]) == 0
    out = capsys.readouterr().out
    match = LINE.match(out.strip())
    assert match and len(out.splitlines()) == 1, out
    return match


def test_the_grokked_model_answers_held_out_pairs(grokked, capsys):
    cfg = OmegaConf.load(grokked / ".hydra" / "config.yaml")
    data = build_task(cfg.task).split()
    held_out = data.val_x[:6, :2].tolist()
    for a, b in held_out + [[45, 30], [58, 58], [0, 0]]:
        m = ask(grokked, a, b, capsys)
        assert m["q"] == f"({a} + {b}) mod 59"
        assert int(m["truth"]) == (a + b) % 59
        assert int(m["guess"]) == int(m["truth"]) and m["mark"] == "✓", m.group(0)
    assert ask(grokked, *held_out[0], capsys)["split"] == "held-out pair"
    a, b = data.train_x[0, :2].tolist()
    assert ask(grokked, a, b, capsys)["split"] == "training pair"


def test_an_ungrokked_run_still_gets_the_true_answer(root, capsys):
    run = root / "multirun" / "tiny" / "0"
    for a, b in [(5, 3), (22, 22), (13, 10)]:
        m = ask(run, a, b, capsys)
        assert m["q"] == f"({a} + {b}) mod 23" and int(m["truth"]) == (a + b) % 23
        assert (m["mark"] == "✓") == (m["guess"] == m["truth"])


def _tiny_run(tmp_path, overrides):
    """A real short training run in a dir laid out as Hydra does (the composed config in .hydra/config.yaml)."""
    from grokpipe.run.train import run

    cfg = compose_cfg(["model=mlp", "model.d_model=8", "train.max_epochs=10", "logger=none", "train.plot=false",
                       "train.print_every=0", *overrides])  # fmt: skip
    (tmp_path / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few epochs on a shared machine: threads only contend
    try:
        run(cfg, tmp_path)
    finally:
        torch.set_num_threads(threads)
    return tmp_path


def test_s5_and_division(tmp_path, capsys):
    s5 = _tiny_run(tmp_path / "s5", ["task=s5"])
    capsys.readouterr()  # the run's own lines (the measures that do not apply to S5 say so)
    m = ask(s5, 7, 119, capsys)
    assert m["q"] == "(7 ∘ 119) in S5" and 0 <= int(m["truth"]) < 120
    from grokpipe.tasks.s5 import S5Task

    a, b, y = S5Task(0.5, 0, 0.95, 0.99).pairs()
    assert int(m["truth"]) == int(y[(a == 7) & (b == 119)][0])
    with pytest.raises(SystemExit) as exit_:
        script("predict").main([str(s5), "120", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: A=120 is not allowed: must be an integer in 0..119 for (a ∘ b) in S5 (indices of the 120 permutations)"
    )

    div = _tiny_run(tmp_path / "div", ["task=mod_div", "task.p=7"])
    capsys.readouterr()
    m = ask(div, 3, 5, capsys)
    assert m["q"] == "(3 / 5) mod 7" and int(m["truth"]) * 5 % 7 == 3
    with pytest.raises(SystemExit):
        script("predict").main([str(div), "3", "0"])
    assert capsys.readouterr().err.strip() == (
        "error: B=0 is not allowed: (3 / 0) mod 7 divides by zero, which has no answer"
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["RUN", "59", "1"], "error: A=59 is not allowed: must be an integer in 0..58 for (a + b) mod 59"),
        (["RUN", "3", "-1"], "error: B=-1 is not allowed: must be an integer in 0..58 for (a + b) mod 59"),
        (["RUN", "x", "1"], "error: A='x' is not allowed: must be an integer in 0..58 for (a + b) mod 59"),
        (["RUN/nope", "1", "1"], "error: RUN/nope: no such run dir"),
        (["RUN", "1"], "error: the following arguments are required: B"),
    ],
)
def test_bad_input_is_one_line(grokked, args, message, capsys):
    args = [a.replace("RUN", str(grokked)) for a in args]
    with pytest.raises(SystemExit) as exit_:
        script("predict").main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [message.replace("RUN", str(grokked))]


def test_the_command_line(grokked):
    ok = run_script("predict", grokked, 45, 30)
    assert ok.returncode == 0 and ok.stderr == ""
    assert ok.stdout.startswith("(45 + 30) mod 59: model says 16 ") and "true answer 16 ✓" in ok.stdout


def test_a_failed_cell_has_no_model_to_ask(root, capsys):
    failed = next(
        d for d in (root / "multirun" / "grok").iterdir() if d.name.isdigit() and not (d / "checkpoints").exists()
    )
    with pytest.raises(SystemExit) as exit_:
        script("predict").main([str(failed), "1", "2"])
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines() == [
        f"error: {failed}: no checkpoints/last.pt (the run failed or has not reached its first checkpoint)"
    ]
