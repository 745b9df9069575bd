"""What each measure costs per evaluation, and what the default set adds to a run.

    python scripts/measure_cost.py                  # p=97, d_model 128 (seed 003's setting), eval every 10
    python scripts/measure_cost.py --quick          # tiny sizes, seconds

In one process: a real model of the setting is trained for a few epochs, then, side by side and as medians over
--repeats rounds, one training epoch (full batch), the evaluation forward on both splits, and each measure's
call on that evaluation are timed. A measure's share is its time over a run's time per evaluation interval:
eval_every epochs plus one evaluation with the base measures (loss, task metrics, weight norm, lr).
With --whole, `python launch.py` is also timed start to finish with the base measures and with the default set
(median of --repeats, alternating), which is what a user sees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = ("loss", "task_metrics", "weight_norm", "lr")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def in_process(p: int, d_model: int, eval_every: int, repeats: int, all_measures: list[str]) -> dict:
    from grokpipe.run.train import Loop, train

    overrides = [f"task.p={p}", f"model.d_model={d_model}", "logger=none", "train.plot=false", "train.print_every=0"]
    overrides += [f"measures=[{','.join(all_measures)}]", "train.max_epochs=5", "train.patience=null"]
    cfg = compose(overrides)
    captured = {}
    original = Loop.run

    def keep(self):  # the loop of a real run, kept to time its parts after it trained a few epochs
        out = original(self)
        captured["loop"] = self
        return out

    Loop.run = keep
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train([cfg], [Path(tmp) / "run"])
    finally:
        Loop.run = original
    loop = captured["loop"]
    from grokpipe.measures import Evaluation

    def forward():
        with torch.no_grad(), loop.autocast:
            return {s: loop.stack.forward(x).float() for s, x in loop.x.items()}

    outputs = forward()
    ev = Evaluation(outputs, loop.y, loop.x, loop.task, loop.loss, loop.stack, loop.optimizer)
    epoch = timed(loop.epoch, repeats)
    fwd = timed(forward, repeats)
    per_measure = {}
    for m in loop.measures:
        with torch.no_grad():
            per_measure[m.name] = timed(lambda m=m: m(ev), repeats)
    base = fwd + sum(t for n, t in per_measure.items() if n in BASE)
    interval = eval_every * epoch + base
    return {
        "p": p,
        "d_model": d_model,
        "eval_every": eval_every,
        "epoch_s": epoch,
        "eval_forward_s": fwd,
        "interval_s": interval,
        "measures": {n: {"seconds": t, "share_of_interval": t / interval} for n, t in per_measure.items()},
        "default_extra_share": sum(t for n, t in per_measure.items() if n not in BASE) / interval,
    }


def whole(p: int, d_model: int, epochs: int, repeats: int) -> dict:
    """`python launch.py` start to finish, base measures against the default set, alternating rounds."""
    common = [f"task.p={p}", f"model.d_model={d_model}", f"train.max_epochs={epochs}", "train.patience=null"]
    common += ["logger=none", "train.plot=false", "train.print_every=0"]
    arms = {"base": [f"measures=[{','.join(BASE)}]"], "default": []}
    times: dict[str, list[float]] = {k: [] for k in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name, extra in arms.items():
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, str(ROOT / "launch.py"), *common, *extra, f"hydra.run.dir={tmp}/{name}{r}"],
                    check=True,
                    capture_output=True,
                )
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"epochs": epochs, "seconds": med, "default_over_base": med["default"] / med["base"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, default=97)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--whole", type=int, default=0, metavar="EPOCHS", help="also time launch.py runs this long")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.p, args.d_model, args.repeats = 11, 8, 2
    measures = [*BASE, "fourier", "effective_rank", "softmax_collapse", "restricted_loss"]
    result = {"in_process": in_process(args.p, args.d_model, args.eval_every, args.repeats, measures)}
    if args.whole:
        result["whole"] = whole(args.p, args.d_model, args.whole, max(args.repeats // 2, 1))
    ip = result["in_process"]
    head = f"p={ip['p']} d_model={ip['d_model']}: epoch {ip['epoch_s'] * 1e3:.1f} ms, "
    print(head + f"eval forward {ip['eval_forward_s'] * 1e3:.1f} ms, interval {ip['interval_s'] * 1e3:.0f} ms")
    for name, m in ip["measures"].items():
        print(f"  {name:18s} {m['seconds'] * 1e3:8.2f} ms  {100 * m['share_of_interval']:6.2f} %")
    print(f"default set beyond the base measures: {100 * ip['default_extra_share']:.2f} % of a run")
    if "whole" in result:
        w = result["whole"]
        sec = w["seconds"]
        print(f"launch.py, {w['epochs']} epochs: base {sec['base']:.2f} s, default {sec['default']:.2f} s "
              f"({w['default_over_base']:.3f}x)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
