"""A run's end as a person reads it: did it grok and when, what moved before, how long, where the files are.

The full record is summary.json (grokpipe.run.record); `train.print_summary=true` prints it instead of these lines.
"""

from __future__ import annotations

from pathlib import Path


def format_duration(seconds: float) -> str:
    """45s, 2m10s, 1h05m: two units at most, whole seconds."""
    s = max(0, int(round(seconds)))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _outcome(s: dict) -> str:
    unit = "step" if s.get("unit") == "steps" else "epoch"
    memorised = f"memorised at {unit} {s['memorized_epoch']}" if s.get("memorized_epoch") is not None else (
        "never memorised")  # fmt: skip
    if s.get("status") == "grokked" or s.get("grokked"):
        return f"grokked at {unit} {s['grok_epoch']}; {memorised} ({s.get('criterion', '')})"
    if s.get("status") == "diverged":
        return f"diverged at {unit} {s.get('epochs_run')} (a non-finite train loss); {memorised}"
    final = {k[len("final_val_") :]: v for k, v in s.items() if k.startswith("final_val_") and k != "final_val_loss"}
    where = ", ".join(f"val {k} {v:.3g}" for k, v in final.items() if isinstance(v, (int, float)))
    return f"did not grok in {s.get('epochs_run')} {unit}s ({where or 'no val metric'}); {memorised}"


def _measures(s: dict) -> str | None:
    crossed = s.get("crossed") or {}
    if not crossed:
        return None
    lead = s.get("hidden_progress") or {}
    done = [f"{k} at {v}" + (f" ({lead[k]} before the grok)" if lead.get(k) is not None else "")
            for k, v in crossed.items() if v is not None]  # fmt: skip
    never = [k for k, v in crossed.items() if v is None]
    parts = [f"crossed: {', '.join(done)}" if done else "", f"not crossed: {', '.join(never)}" if never else ""]
    return "progress measures " + "; ".join(p for p in parts if p)


def _wandb(run_dir: Path) -> str | None:
    """The command to look at the run's W&B record: its offline dir read back, or uploaded."""
    found = sorted((run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    if found:
        return f"W&B (offline): wandb leet inspect --summary {found[-1]}   upload: wandb sync {found[-1]}"
    online = sorted((run_dir / "wandb").glob("run-*"), key=lambda p: p.stat().st_mtime)
    return f"W&B (online): synced from {online[-1]}" if online else None


def describe(summary: dict, run_dir: Path) -> str:
    """A few lines: the outcome, the measures that crossed, time and size, the run dir and figure, W&B."""
    s, run_dir = summary, Path(run_dir)
    what = (f"{s.get('model')} d_model {s.get('d_model')} on {s.get('task')}"
            + (f" p={s['p']}" if s.get("p") is not None else "")
            + f" (ratio {s.get('ratio', 0):.3g}), {s.get('optimizer')} lr {s.get('lr')} wd {s.get('wd')}, seed "
            f"{s.get('seed')}")  # fmt: skip
    unit = "steps" if s.get("unit") == "steps" else "epochs"
    took = format_duration(s["wall_seconds"]) if s.get("wall_seconds") is not None else "?"
    lines = [
        _outcome(s),
        _measures(s),
        f"trained {s.get('epochs_run')} {unit} in {took}: {what}",
        f"run dir: {run_dir}" + (f"   figure: {run_dir / 'curves.png'}" if (run_dir / "curves.png").exists() else ""),
        _wandb(run_dir),
        f"full record: {run_dir / 'summary.json'} (train.print_summary=true prints it here)",
    ]
    return "\n".join(line for line in lines if line)
