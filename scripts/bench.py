"""Throughput of grokpipe against seed 003's own loop, with FLOPs and the share of the machine's matmul rate.

    python scripts/bench.py                        # p=97, d_model 128 and 32, CPU (and CUDA when present)
    python scripts/bench.py --process --d-model 128 --epochs 120   # whole processes, start to finish
    python scripts/bench.py --procs --json b.json  # also: two one-thread processes against one process
    python scripts/bench.py --quick                # tiny sizes, seconds (what tests/test_bench.py runs)

In-process rows, per device and d_model (full batch, eval every 10 epochs):
  reference  seed 003's own model and loop (scripts/seed003_loop.py: its hand-written pre-LN transformer, torch's
             AdamW; forward, cross-entropy, zero_grad, backward, step; train and val evaluated through .item())
  single     grokpipe.run.train.run() itself (logger=none, plot=false, patience=null) in a temp dir
  packed     grokpipe.run.train.train() of a pack of N members (seeds x weight decays); counts member-epochs
  bf16       run() with train.precision=bf16
  step_floor the bare training step of grokpipe's model and nothing else (no evaluation, metrics or files), as
             grokpipe.run.stack.GraphedStep runs it: on CUDA one CUDA-graph replay per epoch. A launch-bound
             run cannot go faster; single / step_floor is the overhead of everything run() adds
  packed_gpu (CUDA only) train() of a pack of --gpu-members members (64)
  sweep_*    (--procs) run() in fresh processes: one alone with the default threads, one alone with one
             thread, and two one-thread processes side by side (their summed run-epochs per second)
Whole-process rows (--process, CPU), each a fresh `python` process timed from outside, start to finish:
  process_reference  `python scripts/seed003_loop.py --prime P --d_model D --epochs E`
  process_reference_keep_heap   the same with glibc's malloc keeping freed memory (GLIBC_TUNABLES), as
                     grokpipe's run sets it for itself (grokpipe.run.device.keep_freed_memory)
  process_grokpipe   `python launch.py sweep=seed003 task.p=P model.d_model=D train.max_epochs=E logger=none`
  process_grokpipe_1thread, process_grokpipe_bf16   the same with train.threads=1, with train.precision=bf16
  import_torch       `python -c "import torch"`
  startup            `python launch.py ...` for one epoch (train.eval_every=1, plot=false) minus import_torch: the
                     start-up before the first epoch, with one epoch and the finish (summary, checkpoint) on top
In process every row runs with glibc's malloc keeping freed memory (grokpipe.run.device.keep_freed_memory, which a
run sets for its whole process); the whole-process rows show what it gives each side.
Timings are medians over --repeats rounds; within a round the rows run one after another, so their ratios
are measured side by side. FLOPs per epoch are counted by torch.utils.flop_counter.FlopCounterMode on the
reference model (forward + backward of one step + the evaluation amortised over eval_every; optimizer FLOPs left
out); the limit is the median rate of a large fp32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import seed003_loop  # noqa: E402

from grokpipe.models import build_model  # noqa: E402
from grokpipe.run.device import KEEP_FREE_BYTES, keep_freed_memory  # noqa: E402
from grokpipe.tasks import build_task  # noqa: E402

EVAL_EVERY = 10


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def run_overrides(p: int, d_model: int, epochs: int, device: str, extra: tuple = ()) -> list[str]:
    return [
        f"task.p={p}",
        f"model.d_model={d_model}",
        f"train.max_epochs={epochs}",
        f"train.eval_every={EVAL_EVERY}",
        "train.patience=null",
        f"train.device={device}",
        "logger=none",
        "train.plot=false",
        "train.print_every=0",
        *extra,
    ]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: str, n: int, repeats: int, dtype=torch.float32) -> float:
    """The machine's limit: the median rate of an n x n matmul."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_per_epoch(p: int, d_model: int, device: str) -> int:
    """Forward + backward of one full-batch step plus (train + val forward) / eval_every, by FlopCounterMode, on
    seed 003's model (grokpipe's computes the same function with fewer FLOPs: the share a row reaches is of the
    work the reference does)."""
    from torch.utils.flop_counter import FlopCounterMode

    train_x, train_y, val_x, _ = (t.to(device) for t in seed003_loop.data(p, 0))
    model = seed003_loop.GrokTransformer(p, d_model).to(device)
    with FlopCounterMode(display=False) as step:
        F.cross_entropy(model(train_x), train_y).backward()
    with FlopCounterMode(display=False) as evaluation, torch.no_grad():
        model(train_x), model(val_x)
    return step.get_total_flops() + evaluation.get_total_flops() // EVAL_EVERY


def reference(p: int, d_model: int, epochs: int, device: str) -> float:
    """Seed 003's own model and loop (scripts/seed003_loop.py); returns seconds for `epochs` epochs."""
    train_x, train_y, val_x, val_y = (t.to(device) for t in seed003_loop.data(p, 0))
    torch.manual_seed(0)
    model = seed003_loop.GrokTransformer(p, d_model).to(device)
    opt = seed003_loop.adamw(model)
    splits = {"train": (train_x, train_y), "val": (val_x, val_y)}
    sync(device)
    t = time.perf_counter()
    for epoch in range(1, epochs + 1):
        seed003_loop.train_epoch(model, opt, train_x, train_y)
        if epoch % EVAL_EVERY == 0:
            seed003_loop.evaluate(model, splits)
    sync(device)
    return time.perf_counter() - t


def single(p: int, d_model: int, epochs: int, device: str, extra: tuple = ()) -> float:
    """grokpipe.run.train.run() end to end in a temp dir; returns seconds."""
    from grokpipe.run.train import run

    cfg = compose(run_overrides(p, d_model, epochs, device, extra))
    with tempfile.TemporaryDirectory() as tmp:
        sync(device)
        t = time.perf_counter()
        run(cfg, Path(tmp))
        sync(device)
        return time.perf_counter() - t


def packed(p: int, d_model: int, epochs: int, device: str, members: int) -> float:
    """grokpipe.run.train.train() of a pack of `members` seeds x weight decays; returns seconds."""
    from grokpipe.run.train import train

    wds = (1.0, 0.3, 0.1, 3.0)
    cfgs = [
        compose(run_overrides(p, d_model, epochs, device, (f"train.seed={i}", f"optim.wd={wds[i % len(wds)]}")))
        for i in range(members)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        sync(device)
        t = time.perf_counter()
        train(cfgs, [Path(tmp) / str(i) for i in range(members)])
        sync(device)
        return time.perf_counter() - t


def step_floor(p: int, d_model: int, epochs: int, device: str) -> float:
    """Seconds for `epochs` bare training steps of one model (the module on a CPU, a graphed pack of one on CUDA)."""
    from grokpipe.losses import build_loss
    from grokpipe.optim import build_optimizer
    from grokpipe.run.stack import GraphedStep, make_stack

    cfg = compose(run_overrides(p, d_model, epochs, device))
    task = build_task(cfg.task)
    data = task.split().to(device)
    torch.manual_seed(0)
    stack = make_stack([build_model(cfg.model, task.spec).to(device)], vmap=device == "cuda")
    optimizer, loss = build_optimizer(stack.flat, [cfg.optim], stack.layout), build_loss(cfg.loss)
    active = torch.ones(1, 1, dtype=torch.bool, device=device)
    x, y = data.train_x[None], data.train_y[None]

    def body() -> None:
        loss(stack.forward(x), y).sum().backward()
        optimizer.step(stack.grad, active)

    graphed = GraphedStep(stack.zero_grad, body, enabled=device == "cuda")
    for _ in range(5):  # side-stream warm-up and capture on CUDA
        graphed()
    sync(device)
    t = time.perf_counter()
    for _ in range(epochs):
        graphed()
    sync(device)
    return time.perf_counter() - t


def _sweep_worker(threads: int | None, p: int, d_model: int, epochs: int, start, out) -> None:
    if threads:
        torch.set_num_threads(threads)
    single(p, d_model, 1, "cpu")  # warm-up: imports and first-call costs stay out of the timing
    start.wait()
    out.put(single(p, d_model, epochs, "cpu"))


def sweep_round(p: int, d_model: int, epochs: int, procs: int, threads: int | None) -> float:
    """`procs` fresh processes running run() side by side; returns their summed run-epochs per second."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_sweep_worker, args=(threads, p, d_model, epochs, start, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    seconds = []
    while len(seconds) < procs:
        try:
            seconds.append(out.get(timeout=5))
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:  # a worker that died never reports: fail instead of waiting forever
                raise RuntimeError(f"a sweep worker exited with status {dead[0]}") from None
    for w in workers:
        w.join()
    return sum(epochs / s for s in seconds)


# glibc's malloc told, through its environment, what grokpipe.run.device.keep_freed_memory() sets in a run's process
KEEP_HEAP_ENV = {"GLIBC_TUNABLES": f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={KEEP_FREE_BYTES}"}


def _timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of one fresh process, start to finish (it must succeed)."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def process_rows(args, d_model: int, flops: int, limits: dict) -> list[dict]:
    """Whole processes, one after another in each round: seed 003's train.py loop, `python launch.py`, `import
    torch` alone, and launch.py for one epoch (the start-up)."""
    py, p, epochs = sys.executable, args.p, args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def launch(name: str, n_epochs: int, *extra: str) -> list[str]:
            run_dir = work / f"{name}_{len(list(work.iterdir()))}"  # a fresh run dir: nothing to resume
            return [
                py,
                str(ROOT / "launch.py"),
                "sweep=seed003",
                f"task.p={p}",
                f"model.d_model={d_model}",
                f"train.max_epochs={n_epochs}",
                "logger=none",
                f"hydra.run.dir={run_dir}",
                *extra,
            ]

        reference = lambda: [  # noqa: E731
            py,
            str(ROOT / "scripts" / "seed003_loop.py"),
            "--prime",
            str(p),
            "--d_model",
            str(d_model),
            "--weight_decay",
            "1.0",
            "--epochs",
            str(epochs),
            "--out",
            str(work / "reference"),
        ]
        cmds = {
            "process_reference": reference,
            "process_reference_keep_heap": reference,
            "process_grokpipe": lambda: launch("grokpipe", epochs),
            "process_grokpipe_1thread": lambda: launch("grokpipe", epochs, "train.threads=1"),
            "process_grokpipe_bf16": lambda: launch("grokpipe", epochs, "train.precision=bf16"),
            "import_torch": lambda: [py, "-c", "import torch"],
            "one_epoch": lambda: launch("one", 1, "train.eval_every=1", "train.plot=false"),
        }
        times = {name: [] for name in cmds}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                times[name].append(_timed(cmd(), work, KEEP_HEAP_ENV if name.endswith("keep_heap") else None))
    processes = (
        "process_reference",
        "process_reference_keep_heap",
        "process_grokpipe",
        "process_grokpipe_1thread",
        "process_grokpipe_bf16",
    )
    rows = [_row(name, "cpu", d_model, args, 1, epochs, times[name], flops, limits) for name in processes]
    for r in rows:
        r["vs_reference"] = statistics.median(times["process_reference"]) / statistics.median(r["seconds"])
    startup = [one - torch_ for one, torch_ in zip(times["one_epoch"], times["import_torch"])]
    rows.append(
        {
            "name": "import_torch",
            "device": "cpu",
            "d_model": d_model,
            "seconds": times["import_torch"],
            "median_s": statistics.median(times["import_torch"]),
        }
    )
    rows.append(
        {
            "name": "startup",
            "device": "cpu",
            "d_model": d_model,
            "seconds": startup,
            "median_s": statistics.median(startup),
            "one_epoch_seconds": times["one_epoch"],
        }
    )
    return rows


def bench(args) -> dict:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows, limits = [], {}
    if not args.process:  # process-wide: a run sets it on its first call, so every in-process row runs with it
        keep_freed_memory()
    for device in devices:
        limits[device] = {
            "fp32_matmul_gflops": matmul_gflops(device, args.matmul_n, max(args.repeats, 5)),
            "bf16_matmul_gflops": matmul_gflops(device, args.matmul_n, max(args.repeats, 5), torch.bfloat16),
        }
        for d_model in args.d_model:
            if args.process:
                if device == "cpu":
                    rows += process_rows(args, d_model, flops_per_epoch(args.p, d_model, device), limits)
                continue
            shape = dict(p=args.p, d_model=d_model, device=device)
            cases = {
                "reference": (1, partial(reference, **shape)),
                "single": (1, partial(single, **shape)),
                "packed": (args.members, partial(packed, **shape, members=args.members)),
                "bf16": (1, partial(single, **shape, extra=("train.precision=bf16",))),
                "step_floor": (1, partial(step_floor, **shape)),
            }
            if device == "cuda":
                cases["packed_gpu"] = (args.gpu_members, partial(packed, **shape, members=args.gpu_members))
            for _, fn in cases.values():  # warm-up round, untimed: first-call costs stay out of the timing
                fn(epochs=2)
            times = {name: [] for name in cases}
            for _ in range(args.repeats):
                for name, (_, fn) in cases.items():
                    times[name].append(fn(epochs=args.epochs))
            flops = flops_per_epoch(args.p, d_model, device)
            for name, (members, _) in cases.items():
                rows.append(_row(name, device, d_model, args, members, args.epochs, times[name], flops, limits))
            if args.procs and device == "cpu":
                rows += sweep_rows(args, d_model, flops, limits)
    ref = {(r["device"], r["d_model"]): r["run_epochs_per_s"] for r in rows if r["name"] == "reference"}
    for r in rows:
        if "vs_reference" not in r and "run_epochs_per_s" in r:
            r["vs_reference"] = r["run_epochs_per_s"] / ref[(r["device"], r["d_model"])]
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "loadavg_at_end": os.getloadavg(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "limits": limits,
        "rows": rows,
    }


def sweep_rows(args, d_model: int, flops: int, limits: dict) -> list[dict]:
    layouts = {"sweep_1proc_default_threads": (1, None), "sweep_1proc_1thread": (1, 1), "sweep_2procs_1thread": (2, 1)}
    rates = {name: [] for name in layouts}
    for _ in range(args.repeats):
        for name, (procs, threads) in layouts.items():
            rates[name].append(sweep_round(args.p, d_model, args.epochs, procs, threads))
    rows = []
    for name, (procs, _) in layouts.items():
        # express as seconds for `epochs` run-epochs so _row's arithmetic applies unchanged
        times = [args.epochs / r for r in rates[name]]
        rows.append(_row(name, "cpu", d_model, args, 1, args.epochs, times, flops, limits))
        rows[-1]["processes"] = procs
    return rows


def _row(name, device, d_model, args, members, epochs, times, flops, limits) -> dict:
    seconds = statistics.median(times)
    rate = members * epochs / seconds
    gflops = rate * flops / 1e9
    return {
        "name": name,
        "device": device,
        "p": args.p,
        "d_model": d_model,
        "members": members,
        "epochs": epochs,
        "seconds": times,
        "run_epochs_per_s": rate,
        "ms_per_run_epoch": 1e3 / rate,
        "flops_per_epoch": flops,
        "gflops_per_s": gflops,
        "share_of_fp32_limit": gflops / limits[device]["fp32_matmul_gflops"],
    }


def table(result: dict) -> str:
    head = f"{'row':<28}{'dev':<6}{'d':>5}{'M':>4}{'ep/s':>9}{'ms/ep':>9}{'GFLOP/ep':>10}{'GFLOP/s':>9}"
    head += f"{'limit%':>8}{'vs ref':>8}"
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        if "median_s" in r:  # a time, not a rate
            lines.append(f"{r['name']:<28}{r['device']:<6}{r['d_model']:>5}  median {r['median_s']:.2f} s")
            continue
        lines.append(
            f"{r['name']:<28}{r['device']:<6}{r['d_model']:>5}{r['members']:>4}{r['run_epochs_per_s']:>9.2f}"
            f"{r['ms_per_run_epoch']:>9.1f}{r['flops_per_epoch'] / 1e9:>10.3f}{r['gflops_per_s']:>9.1f}"
            f"{100 * r['share_of_fp32_limit']:>7.1f}%{r['vs_reference']:>8.2f}"
        )
    for device, lim in result["limits"].items():
        lines.append(
            f"{device} limit: fp32 matmul {lim['fp32_matmul_gflops']:.1f} GFLOP/s, bf16 {lim['bf16_matmul_gflops']:.1f}"
        )
    return "\n".join(lines)


def check(p: int, d_model: int, epochs: int, repeats: int, floor: float) -> dict:
    """grokpipe's run() against seed 003's loop in this process, alternated after one untimed round of each, the
    median of `repeats` ratios (the loop's seconds over ours): a guard a noisy machine can pass honestly, since
    both sides share its load. Exit 1 with one line when the median is below `floor`."""
    keep_freed_memory()  # as run() sets it for the rest of the process: the loop gets it too
    shape = {"p": p, "d_model": d_model, "epochs": epochs, "device": "cpu"}
    reference(**shape), single(**shape)
    ratios = [reference(**shape) / single(**shape) for _ in range(repeats)]
    median = statistics.median(ratios)
    print(
        f"speed check: run() at {median:.2f}x seed 003's loop (p={p}, d_model={d_model}, {epochs} epochs, median of "
        f"{repeats} alternated rounds: {', '.join(f'{r:.2f}' for r in ratios)}); floor {floor:g}",
        flush=True,
    )
    if median < floor:
        print(f"error: run() is {median:.2f}x seed 003's loop, below the floor {floor:g}", file=sys.stderr)
        sys.exit(1)
    return {"check": {"ratio": median, "ratios": ratios, "floor": floor, **shape}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20, help="epochs per timed run (per member when packed)")
    ap.add_argument("--members", type=int, default=8, help="members of the packed row")
    ap.add_argument("--gpu-members", type=int, default=64, help="members of the packed_gpu row (CUDA only)")
    ap.add_argument("--d-model", type=int, nargs="+", default=[128, 32])
    ap.add_argument("--p", type=int, default=97)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds; medians are reported")
    ap.add_argument("--matmul-n", type=int, default=2048, help="size of the matmul that sets the limit")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in this process (default: torch's)")
    ap.add_argument("--procs", action="store_true", help="also time one process against two one-thread processes")
    ap.add_argument("--process", action="store_true", help="whole-process rows only: seed 003's loop against launch.py")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument(
        "--check", type=float, default=None, metavar="FLOOR",
        help="only time run() against seed 003's loop (first --d-model), alternated; exit 1 below FLOOR",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.check is not None:
        if args.threads:
            torch.set_num_threads(args.threads)
        return check(args.p, args.d_model[0], args.epochs, args.repeats, args.check)
    if args.quick:
        args.epochs, args.members, args.d_model, args.p, args.repeats, args.matmul_n = 10, 2, [16], 23, 1, 256
        args.threads = args.threads or 1  # two threads on a shared 2-core box mostly wait for each other
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(args)
    print(table(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
