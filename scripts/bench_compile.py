"""Whether compiling a run repays: a compiled single run against the eager one, per epoch, and what the compile
costs cold (an empty on-disk cache) and warm (a cache filled by an earlier process of the same shape).

    python scripts/bench_compile.py                                  # p=97 d_model 8 32 128; p=23 d_model 4 24 92
    python scripts/bench_compile.py --shape 97:8 --epochs 200 --repeats 3

Each measurement is its own process (a compile cache lives on disk and in the process): `eager`, then `cold`
(torch.compile with TORCHINDUCTOR_CACHE_DIR an empty dir), then `warm` (the same dir again, a new process). A
process builds seed 003's run at that shape as `grokpipe.run.train` builds it (one torch thread, fp32, full batch,
an evaluation every 10 epochs with the default measures), times its first epoch and evaluation (where compiling
happens) and then `--epochs` more, in `--repeats` rounds, and hashes its weights (a compiled run from a cold and a
warm cache must end bitwise equal). Repays: the epochs after which the compiled run is ahead
of the eager one, warm: compile cost / (eager ms per epoch - compiled ms per epoch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(p: int, d_model: int, compiled: bool, epochs: int, repeats: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_pack import build_loop, train_for

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        loop = build_loop(d_model, 1, "single", Path(tmp), p)
        if compiled:
            loop.stack.model.compile()
        t = time.perf_counter()
        train_for(loop, loop.tc.eval_every)  # the first epochs and evaluation: the compile, if any
        first = time.perf_counter() - t
        rounds = [train_for(loop, epochs) / epochs * 1e3 for _ in range(repeats)]
        weights = hashlib.sha256(loop.stack.flat.detach().numpy().tobytes()).hexdigest()[:16]
    return {"first_s": first, "ms_per_epoch": statistics.median(rounds), "rounds": rounds, "weights": weights}


def measure(p: int, d_model: int, epochs: int, repeats: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        for kind in ("eager", "cold", "warm"):
            cmd = [sys.executable, __file__, "--child", f"{p}:{d_model}", kind, str(epochs), str(repeats)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{kind} at p={p} d_model {d_model} failed:\n{done.stderr[-3000:]}")
            out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        p, d = map(int, sys.argv[2].split(":"))
        print(json.dumps(child(p, d, sys.argv[3] != "eager", int(sys.argv[4]), int(sys.argv[5]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", default=["97:8", "97:32", "97:128", "23:4", "23:24", "23:92"],
                    help="p:d_model")  # fmt: skip
    ap.add_argument("--epochs", type=int, default=100, help="epochs per timed round (a multiple of 10)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for shape in args.shape:
        p, d = map(int, shape.split(":"))
        r = measure(p, d, args.epochs, args.repeats)
        eager, comp = r["eager"]["ms_per_epoch"], r["warm"]["ms_per_epoch"]
        cold = r["cold"]["first_s"] - r["eager"]["first_s"]
        warm = r["warm"]["first_s"] - r["eager"]["first_s"]
        gain = eager - comp
        repays = f"{warm / gain * 1e3:,.0f} epochs warm, {cold / gain * 1e3:,.0f} cold" if gain > 0 else "never"
        same = "bitwise equal" if r["cold"]["weights"] == r["warm"]["weights"] else "NOT equal"
        print(
            f"p={p} d_model {d:3d}: eager {eager:7.2f} ms/epoch, compiled {comp:7.2f} ({eager / comp:.2f}x); "
            f"compile {cold:5.1f} s cold, {warm:5.1f} s warm; repays after {repays}; "
            f"cold and warm compiled weights {same}",
            flush=True,
        )
        print(json.dumps({"p": p, "d_model": d, **r}), flush=True)


if __name__ == "__main__":
    main()
