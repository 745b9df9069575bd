"""Re-run a recorded run and say whether its numbers match: `scripts/reproduce.py RUN_DIR`.

The recorded config (RUN_DIR/.hydra/config.yaml, exactly as it ran) trains again in a new dir, with the recorded
thread count (the bits of a CPU run depend on it), optionally for its first N epochs only. Then, row by row of
metrics.csv (elapsed aside), each evaluation is exact (every value as written), within the tolerance, or where the
two runs part (the first row and column beyond it); the weights of every checkpoint epoch both runs kept are
compared bit for bit; and the recorded provenance is compared with the re-run's (commit, versions, device).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

import grokpipe.core.checkpoint as checkpoint
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import read_metrics, write_summary

REPORT = "reproduce.json"
PACK_MEMBERS = "pack_members"  # in a re-run dir: the other members of the pack the cell is re-run in
IGNORED = ("epoch", "elapsed")  # not results: the row's key, and wall time


@dataclass
class RowComparison:
    """metrics.csv of the original against the re-run, on the epochs both have."""

    compared: int = 0
    exact: int = 0
    close: int = 0
    parted: dict | None = None  # first row beyond the tolerance: epoch, column, original, rerun
    first_inexact: dict | None = None  # first row that is not exact (but may be within the tolerance)
    only_original: list[int] = field(default_factory=list)
    only_rerun: list[int] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.parted is not None:
            return "parted"
        if self.compared == 0:
            return "nothing to compare"
        return "exact" if self.exact == self.compared else "within tolerance"


def _same(a, b) -> bool:
    nan = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (nan(a) and nan(b)) or a == b


def _close(a, b, rtol: float, atol: float) -> bool:
    if _same(a, b):
        return True
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return False
    return abs(a - b) <= atol + rtol * abs(b)


def compare_rows(original: list[dict], rerun: list[dict], rtol: float, atol: float) -> RowComparison:
    """Row by row over the epochs both have, on the columns both have (a measure only one ran is left out)."""
    out = RowComparison()
    mine, theirs = {r["epoch"]: r for r in original}, {r["epoch"]: r for r in rerun}
    last = min(max(mine, default=0), max(theirs, default=0))  # a shorter re-run compares its own epochs
    out.only_original = sorted(e for e in mine if e not in theirs and e <= last)
    out.only_rerun = sorted(e for e in theirs if e not in mine and e <= last)
    for epoch in sorted(set(mine) & set(theirs)):
        a, b = mine[epoch], theirs[epoch]
        columns = [c for c in a if c in b and c not in IGNORED]
        out.compared += 1
        inexact = [c for c in columns if not _same(a[c], b[c])]
        if not inexact:
            out.exact += 1
            continue
        if out.first_inexact is None:
            c = inexact[0]
            out.first_inexact = {"epoch": epoch, "column": c, "original": a[c], "rerun": b[c]}
        far = [c for c in inexact if not _close(a[c], b[c], rtol, atol)]
        if not far:
            out.close += 1
        elif out.parted is None:
            c = far[0]
            out.parted = {"epoch": epoch, "column": c, "original": a[c], "rerun": b[c], "columns": far}
    return out


def compare_weights(original: Path, rerun: Path) -> list[dict]:
    """Every checkpoint epoch both runs kept: are the weights bit for bit the same (else the largest difference)."""
    import torch

    a, b = checkpoint.by_epoch(original), checkpoint.by_epoch(rerun)
    out = []
    for epoch in sorted(set(a) & set(b)):
        wa, wb = checkpoint.read(a[epoch]).model, checkpoint.read(b[epoch]).model
        same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        diff = None
        if not same and wa.keys() == wb.keys():
            diff = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
        out.append({"epoch": epoch, "identical": same, "max_abs_diff": diff})
    return out


def recorded_config(run_dir: Path) -> DictConfig:
    """The config a run dir recorded, checked by this grokpipe; ConfigError (one line) if it is not a run or its
    config no longer validates here."""
    run_dir = Path(run_dir)
    path = run_dir / ".hydra" / "config.yaml"
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory")
    if not path.is_file() or not (run_dir / "metrics.csv").is_file():
        raise ConfigError(f"{run_dir} is not a grokpipe run dir (it needs .hydra/config.yaml and metrics.csv)")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigError(f"{path} does not parse: {str(exc).splitlines()[0]}") from None
    if "pack" in cfg:
        del cfg["pack"]
    _fill_pack_forward(cfg)
    _fill_train_defaults(cfg)
    _fill_logger_target(cfg)
    return cfg


def checked(cfg: DictConfig, run_dir: Path):
    """The re-run's config checked and resolved once, on this machine (grokpipe.config.validate.prepare); a config
    this grokpipe refuses is one line naming the grokpipe that made the run."""
    from grokpipe.config.validate import prepare
    from grokpipe.run.train import machine_of

    try:
        return prepare(cfg, machine_of)
    except ConfigError as exc:
        made_by = _made_by(run_dir)
        raise ConfigError(f"{run_dir}'s config does not validate with this grokpipe ({exc}){made_by}") from None


def _conf_file(relative: str) -> Path | None:
    """A file of conf/: of this checkout, or of the dir an install runs from."""
    places = (Path(__file__).resolve().parents[2], Path.cwd())
    return next((p / "conf" / relative for p in places if (p / "conf" / relative).is_file()), None)


def _fill_logger_target(cfg: DictConfig) -> None:
    """A run made before the logger was a part names its logger only: the class is today's option of that name."""
    logger = cfg.get("logger")
    if not isinstance(logger, DictConfig) or logger.get("_target_") is not None:
        return
    option = _conf_file(f"logger/{logger.get('name')}.yaml")
    if option is not None:
        with open_dict(cfg):
            cfg.logger["_target_"] = OmegaConf.load(option)["_target_"]


def _fill_pack_forward(cfg: DictConfig) -> None:
    """A pack made before train.pack_forward existed computed its members through vmap: it re-runs so."""
    if isinstance(cfg.get("train"), DictConfig) and "pack_forward" not in cfg.train:
        with open_dict(cfg):
            cfg.train.pack_forward = "vmap"


def _fill_train_defaults(cfg: DictConfig) -> None:
    """train keys added since the run was made take today's defaults (they change how, not what, it trains)."""
    found = _conf_file("train/default.yaml")
    if found is None or "train" not in cfg or not isinstance(cfg.train, DictConfig):
        return  # the validation names what is missing
    defaults = OmegaConf.load(found)
    missing = [k for k in defaults if k not in cfg.train]
    if missing:
        with open_dict(cfg):
            for k in missing:
                cfg.train[k] = defaults[k]
        print(f"note: the run recorded no {', '.join('train.' + k for k in missing)}: today's defaults", flush=True)


def _made_by(run_dir: Path) -> str:
    from grokpipe.run.provenance import read

    prov = read(run_dir)
    if not prov:
        return "; it has no provenance.json (made before grokpipe recorded one)"
    return f"; it was made by grokpipe {prov.get('grokpipe_version')} at commit {prov.get('commit')}"


def reproduce(run_dir: Path, out_dir: Path, epochs: int | None = None, rtol: float = 1e-4, atol: float = 1e-8) -> dict:
    """Train `run_dir`'s recorded config again in `out_dir` (its first `epochs` epochs, or as recorded) and
    compare. Returns the report, also written to out_dir/reproduce.json."""
    import grokpipe.run.provenance as provenance
    from grokpipe.run.train import train

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    members = pack_of(run_dir)  # a cell that trained in a pack re-runs in that pack: its float order is the pack's
    cfg = recorded_config(run_dir)
    try:
        original = read_metrics(run_dir / "metrics.csv")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir}/metrics.csv cannot be read: {exc}") from None
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: re-run into a new dir")
    recorded = provenance.read(run_dir)
    sources = members or [run_dir]
    targets = [out_dir if m == run_dir else out_dir / PACK_MEMBERS / m.name for m in sources]
    cfgs = [cfg if m == run_dir else recorded_config(m) for m in sources]
    for member_cfg in cfgs:
        _prepare_rerun(member_cfg, epochs, recorded)
    texts = [OmegaConf.to_yaml(c) for c in cfgs]
    runs = [checked(member_cfg, source) for member_cfg, source in zip(cfgs, sources)]  # nothing written before
    for text, source, target in zip(texts, sources, targets):
        _write_rerun(text, source, target)
    summary = train(runs, targets)[sources.index(run_dir)]
    rerun_rows = read_metrics(out_dir / "metrics.csv")
    rows = compare_rows(original, rerun_rows, rtol, atol)
    now = provenance.read(out_dir) or {}
    original_summary = _summary(run_dir)
    report = {
        "original": str(run_dir),
        "rerun": str(out_dir),
        "pack": [str(m) for m in members] if members else None,
        "epochs": cfg.train.get("max_steps") or cfg.train.max_epochs,
        "verdict": rows.verdict,
        "rows": {**asdict(rows), "verdict": rows.verdict},
        "tolerance": {"rtol": rtol, "atol": atol},
        "weights": compare_weights(run_dir, out_dir),
        "grok_epoch": {"original": original_summary.get("grok_epoch"), "rerun": summary.get("grok_epoch")},
        "provenance_differs": (
            {k: list(v) for k, v in provenance.differences(recorded, now).items()} if recorded else None
        ),
    }
    write_summary(out_dir / REPORT, report)
    return report


def pack_of(run_dir: Path) -> list[Path] | None:
    """The run dirs of the pack a sweep cell trained in (its sweep dir's packs.json, in the pack's order), None for
    a run that trained alone. Members are found by name beside the cell, so a sweep dir copied elsewhere works."""
    from grokpipe.core.cells import read_packs

    sweep_dir = run_dir.parent
    try:
        packs = read_packs(sweep_dir)
    except (OSError, ValueError):
        return None
    for pack in packs:
        names = [Path(d).name for d in pack.get("dirs", [])]
        if run_dir.name in names and len(names) > 1:
            found = [sweep_dir / n for n in names]
            missing = [str(m) for m in found if not (m / ".hydra" / "config.yaml").is_file()]
            if missing:
                raise ConfigError(f"{run_dir} trained in a pack whose members are gone: {', '.join(missing)}")
            return found
    return None


def _prepare_rerun(cfg: DictConfig, epochs: int | None, recorded: dict | None) -> None:
    """`cfg` as it re-runs: its first `epochs` (or as recorded), the recorded thread count, no logger."""
    with open_dict(cfg):
        if epochs is not None and cfg.train.get("compile") == "auto":  # as the whole run resolved it, by its budget
            from grokpipe.config.validate import budget, choose_compile
            from grokpipe.run.train import machine_of

            cfg.train.compile = choose_compile(cfg, machine_of(cfg.train.device), budget(cfg.train)[0])
        if epochs is not None:  # a run counted in steps (train.max_steps) re-runs its first N steps
            cfg.train["max_steps" if cfg.train.get("max_steps") else "max_epochs"] = epochs
        if cfg.train.get("threads") is None and recorded and recorded.get("threads"):
            cfg.train.threads = recorded["threads"]  # a CPU run's bits depend on the thread count
        none = {"_target_": "grokpipe.loggers.none.NoLogger", "name": "none", "group": cfg.logger.get("group")}
        cfg.logger = OmegaConf.create(none)


def _write_rerun(text: str, source: Path, target: Path) -> None:
    """The re-run's .hydra/config.yaml (`text`, as it was before the loop resolved it) and the original's overrides."""
    (target / ".hydra").mkdir(parents=True)
    (target / ".hydra" / "config.yaml").write_text(text)
    overrides = source / ".hydra" / "overrides.yaml"
    if overrides.exists():
        (target / ".hydra" / "overrides.yaml").write_text(overrides.read_text())


def _summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def describe(report: dict) -> str:
    """The report as a few lines for a terminal."""
    r = report["rows"]
    lines = [f"re-ran {report['original']} in {report['rerun']} ({report['epochs']} epochs)"]
    if report.get("pack"):
        lines.append(f"  as the pack it trained in: {len(report['pack'])} members, the others in {PACK_MEMBERS}/")
    head = f"metrics.csv: {r['compared']} rows compared: {r['exact']} exact, {r['close']} within tolerance"
    tol = report["tolerance"]
    lines.append(f"{head} (rtol {tol['rtol']:g}, atol {tol['atol']:g}): {report['verdict']}")
    if r["parted"]:
        p = r["parted"]
        lines.append(
            f"  parted at epoch {p['epoch']}: {p['column']} {p['original']!r} (original) vs {p['rerun']!r} (re-run)"
            f"; columns beyond tolerance there: {', '.join(p['columns'])}"
        )
    elif r["first_inexact"]:
        p = r["first_inexact"]
        lines.append(f"  first inexact: epoch {p['epoch']} {p['column']} {p['original']!r} vs {p['rerun']!r}")
    for key in ("only_original", "only_rerun"):
        if r[key]:
            lines.append(f"  epochs {key.replace('_', ' in ')}: {r[key][:10]}{' ...' if len(r[key]) > 10 else ''}")
    for w in report["weights"]:
        state = "identical" if w["identical"] else f"differ (max |diff| {w['max_abs_diff']:.3g})"
        lines.append(f"weights at epoch {w['epoch']}: {state}")
    g = report["grok_epoch"]
    lines.append(f"grok epoch: {g['original']} (original), {g['rerun']} (re-run)")
    differs = report["provenance_differs"]
    if differs is None:
        lines.append("provenance: the original has none (made before grokpipe recorded it)")
    elif differs:
        lines.append("provenance that differs (original -> re-run):")
        lines.extend(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in differs.items())
    else:
        lines.append("provenance: same commit, versions, device, threads and settings")
    return "\n".join(lines)
