"""A pack against single runs on the CPU: per member-epoch, side by side in one process, and where a pack's time goes.

    python scripts/bench_pack.py                                   # d_model 8 16 32, members 8 32
    python scripts/bench_pack.py --d-model 8 --members 8 64 --epochs 20 --repeats 5
    python scripts/bench_pack.py --engine batched vmap             # also the pack through torch.vmap
    python scripts/bench_pack.py --profile --members 1 8 32 64     # torch.profiler tables of step and evaluation
    python scripts/bench_pack.py --pack-threads 2                  # packs on two threads, the single run on one
    python scripts/bench_pack.py --floor --repeats 5               # how much of a single run a pack could share
    python scripts/bench_pack.py --quick                           # seconds: tiny sizes, one round
    python scripts/bench_pack.py --model mlp --p 23 --d-model 4 24 92   # another model (MODELS), another prime

What is timed is the loop's work and nothing else: `Loop.epoch()` (forward, loss, backward, optimiser update) every
epoch and `Loop.evaluate()` (a forward per split and every default measure) every `train.eval_every` (10) epochs, on
seed 003's transformer (`sweep=seed003`: p=97, full batch, fp32) at each width, or `--model` (MODELS). No
metrics.csv, checkpoints or summaries (those are per member and the same in a pack as alone). `single` is one run as
`train.engine=auto` holds it on a CPU (the module itself); `pack` is M members of seeds 0..M-1. Within a round the
single run and each pack are timed one after another; the figures are medians over rounds, and the ratio is the
single run's ms per epoch over the pack's ms per member-epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grokpipe.run.device import keep_freed_memory  # noqa: E402


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


# --model: the base config of each model measured (its own paper's settings but p, full batch, fp32, eval every 10)
MODELS = {
    "transformer": ["sweep=seed003"],
    "mlp": ["sweep=seed003", "model=mlp"],
    "nanda": ["sweep=nanda2023", "train.eval_every=10"],
}


def build_loop(
    d_model: int, members: int, engine: str, root: Path, p: int = 97, extra: tuple = (), model: str = "transformer"
):
    """A Loop of `members` seeds at this width, built as `grokpipe.run.train.train` builds it, ready to step.
    engine: `single` (one member, the module itself), `batched` (the stack's hand-batched forward), `vmap`
    (train.pack_forward)."""
    from grokpipe.config.validate import prepare
    from grokpipe.models import build_model
    from grokpipe.run.record import RunRecord
    from grokpipe.run.train import Loop, apply_determinism
    from grokpipe.tasks import build_task

    cfgs = []
    for seed in range(members):
        cfg = compose(
            [
                *MODELS[model],
                f"task.p={p}",
                f"model.d_model={d_model}",
                f"train.seed={seed}",
                "train.patience=null",
                "train.device=cpu",
                "logger=none",
                "train.plot=false",
                "train.print_every=0",
                f"train.pack_forward={'vmap' if engine == 'single' else engine}",
                *extra,
            ]
        )
        prepare(cfg)
        cfgs.append(cfg)
    device = torch.device("cpu")
    apply_determinism(cfgs[0].train, device)
    records, models, splits = [], [], []
    for i, cfg in enumerate(cfgs):
        task = build_task(cfg.task)
        torch.manual_seed(cfg.train.seed)
        models.append(build_model(cfg.model, task.spec))
        splits.append(task.split())
        records.append(RunRecord(cfg, root / f"{engine}_{d_model}_{members}_{i}", task))
    return Loop(records, models, splits, [None] * members, 0, device, vmap=engine != "single")


def train_for(loop, epochs: int) -> float:
    """Seconds for `epochs` epochs of the loop's step, with an evaluation every train.eval_every."""
    every = loop.tc.eval_every
    t = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loop.epoch()
        if epoch % every == 0:
            loop.evaluate(epoch // every)
    return time.perf_counter() - t


def compare(
    widths,
    counts,
    epochs: int,
    repeats: int,
    engines: list[str],
    pack_threads: int | None = None,
    p: int = 97,
    model: str = "transformer",
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in widths:
            loops = {("single", 1): build_loop(d, 1, "single", Path(tmp), p, model=model)}
            loops.update({(e, m): build_loop(d, m, e, Path(tmp), p, model=model) for e in engines for m in counts})
            for loop in loops.values():  # warm-up: first-call costs out of the timings
                train_for(loop, loop.tc.eval_every)
            seconds = {k: [] for k in loops}
            threads = torch.get_num_threads()
            for _ in range(repeats):
                for k, loop in loops.items():
                    torch.set_num_threads(threads if k[0] == "single" or pack_threads is None else pack_threads)
                    seconds[k].append(train_for(loop, epochs))
            torch.set_num_threads(threads)
            single = statistics.median(seconds["single", 1]) / epochs * 1e3
            for e, m in loops:
                if e == "single":
                    continue
                per_member = statistics.median(seconds[e, m]) / epochs / m * 1e3
                measures = ",".join(x.name for x in loops[e, m].measures)
                row = {"model": model, "p": p, "d_model": d, "engine": e, "members": m}
                row.update(single_ms=single, pack_ms=per_member)
                row.update(ratio=single / per_member, rounds=seconds[e, m], single_rounds=seconds["single", 1])
                rows.append(row)
                print(
                    f"{model} p={p} d_model {d:3d}  {e:7s} members {m:3d}  single {single:7.2f} ms/epoch  "
                    f"pack {per_member:7.3f} ms/member-epoch  ratio {single / per_member:5.2f}x  "
                    f"({len(loops[e, m].measures)} measures)",
                    flush=True,
                )
                if len(loops[e, m].measures) != len(loops["single", 1].measures):
                    print(f"  (the pack computes {measures})", flush=True)
    return rows


def profile(widths, counts, engine: str, epochs: int, p: int = 97, model: str = "transformer") -> None:
    """torch.profiler tables (self CPU time by op) of the step and of one evaluation, per width and member count;
    and the ops that fell back to a per-member loop under vmap (the fallback warning)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch._C._functorch._set_vmap_fallback_warning_enabled(True)
    with tempfile.TemporaryDirectory() as tmp:
        for d in widths:
            for m in counts:
                loop = build_loop(d, m, engine if m > 1 else "single", Path(tmp), p, model=model)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loop.epoch()  # one step and one evaluation: first-call costs, and any vmap fallback warns
                    loop.evaluate(1)
                fallbacks = sorted({str(w.message).split(".")[0] for w in caught if "fallback" in str(w.message)})
                for what, fn in (("step", loop.epoch), ("evaluation", lambda lp=loop: lp.evaluate(1))):
                    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                        for _ in range(epochs):
                            fn()
                    events = prof.key_averages()
                    total = sum(e.self_cpu_time_total for e in events) / epochs / 1e3
                    print(
                        f"\n=== d_model {d} members {m} {what}: {total:.2f} ms per call ({total / m:.3f} ms per member)"
                    )
                    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
                if fallbacks:
                    print(f"vmap fallbacks at d_model {d}, members {m}: " + "; ".join(fallbacks))
                measure_costs(loop, epochs)


def measure_costs(loop, repeats: int) -> None:
    """Each measure's own time in one evaluation (ms per call and per member)."""
    from grokpipe.measures import Evaluation

    with torch.no_grad():
        outputs = {s: loop.stack.forward(x).float() for s, x in loop.x.items()}
        ev = Evaluation(outputs, loop.y, loop.x, loop.task, loop.loss, loop.stack, loop.optimizer)
        parts = []
        for measure in loop.measures:
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                measure(ev)
                times.append(time.perf_counter() - t)
            ms = statistics.median(times) * 1e3
            parts.append(f"{measure.name} {ms:.2f} ({ms / loop.stack.m:.3f})")
    print(f"measures, ms per evaluation (per member): {', '.join(parts)}")


def floor(widths, repeats: int, p: int = 97, model: str = "transformer") -> None:
    """A single run's step and evaluation on all its samples and on the first 1/64 of them (the same ops and
    launches, 1/64 of the data): the fixed cost per epoch a pack could share, and the most a pack can gain."""
    with tempfile.TemporaryDirectory() as tmp:
        for d in widths:
            loop = build_loop(d, 1, "single", Path(tmp), p, model=model)
            full_x, full_y = dict(loop.x), dict(loop.y)
            ms: dict[tuple, list] = {}
            for _ in range(repeats):
                for frac in (1.0, 1 / 64):
                    for s in full_x:
                        n = max(1, int(full_x[s].shape[1] * frac))
                        loop.x[s], loop.y[s] = full_x[s][:, :n], full_y[s][:, :n]
                    loop.epoch()
                    t = time.perf_counter()
                    for _ in range(5):
                        loop.epoch()
                    ms.setdefault(("step", frac), []).append((time.perf_counter() - t) / 5 * 1e3)
                    t = time.perf_counter()
                    loop.evaluate(1)
                    ms.setdefault(("eval", frac), []).append((time.perf_counter() - t) * 1e3)
            med = {k: statistics.median(v) for k, v in ms.items()}
            every = loop.tc.eval_every
            whole = med["step", 1.0] + med["eval", 1.0] / every
            fixed = med["step", 1 / 64] + med["eval", 1 / 64] / every
            print(
                f"d_model {d:3d}  step {med['step', 1.0]:.1f} ms (1/64: {med['step', 1 / 64]:.1f})  evaluation "
                f"{med['eval', 1.0]:.1f} ms (1/64: {med['eval', 1 / 64]:.1f})  fixed share {fixed / whole:.0%}  "
                f"most a pack can gain {whole / (whole - fixed):.2f}x",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--members", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--epochs", type=int, default=20, help="epochs per timing (a multiple of eval_every, 10)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    ap.add_argument(
        "--engine", choices=["batched", "vmap"], nargs="+", default=["batched"], help="how the pack is computed"
    )
    ap.add_argument("--pack-threads", type=int, help="torch threads for the packs (the single run keeps --threads)")
    ap.add_argument("--floor", action="store_true", help="a single run on all and 1/64 of its samples")
    ap.add_argument("--profile", action="store_true", help="profiler tables instead of the comparison")
    ap.add_argument("--p", type=int, default=97, help="the modulus (seed 003: 97)")
    ap.add_argument("--model", choices=sorted(MODELS), default="transformer", help="which model (its paper's setting)")
    ap.add_argument("--quick", action="store_true", help="p=23, d_model 8, members 4, 10 epochs, one round")
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.d_model, args.members, args.epochs, args.repeats = [8], [4], 10, 1
        args.p = 23
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), engines {args.engine}", flush=True)
    if args.floor:
        floor(args.d_model, args.repeats, args.p, args.model)
    elif args.profile:
        for engine in args.engine:
            profile(args.d_model, args.members, engine, args.epochs, args.p, args.model)
    else:
        compare(
            args.d_model, args.members, args.epochs, args.repeats, args.engine, args.pack_threads, args.p, args.model
        )


if __name__ == "__main__":
    main()
