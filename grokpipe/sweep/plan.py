"""A sweep's plan, in plain Python: its settings, ranges, cells and their coordinates, packs, the boundary search.

The Hydra sweepers (hydra_plugins/grokpipe_plugins/) are thin: they parse the command line, hand this module the
cells' overrides and a `compose` function, and launch what it plans. Checking scales with what differs: cells that
differ only in their seed share one composed, checked config (their class); each other seed is checked against the
seed's domain alone. A 10,000-cell grid of 100 classes composes 100 configs, not 10,000 (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokpipe.core.cells import SEED_KEY
from grokpipe.core.errors import ConfigError

log = logging.getLogger(__name__)
ELLIPSIS = "..."
DEFAULT_SUBDIR = "${hydra.job.num}"  # conf/config.yaml's hydra.sweep.subdir: a cell's dir is its number


# ---------------------------------------------------------------------------------------------------- settings
PACK_CHOICES = (True, False, "auto")


def _problem(key: str, value, allowed: str) -> str:
    return f"hydra.sweeper.{key}={value!r} is not allowed: {allowed}"


@dataclass
class GridSettings:
    """hydra/sweeper=grid's keys (conf/hydra/sweeper/grid.yaml)."""

    pack: Any = "auto"  # true, false or auto
    max_members: Any = None  # cells per pack at most (null: the whole shape)
    max_batch_size: Any = None  # Hydra's: cells per launcher batch
    params: Any = None  # the preset's grid (a sweep preset's hydra.sweeper.params)

    def problems(self) -> list[str]:
        out = []
        if self.pack not in PACK_CHOICES or isinstance(self.pack, int) and not isinstance(self.pack, bool):
            out.append(f"hydra.sweeper.pack={self.pack} is not allowed: true, false or auto")
        for key in ("max_members", "max_batch_size"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                out.append(_problem(key, v, "an integer >= 1, or null"))
        return out

    @classmethod
    def of(cls, settings: dict) -> GridSettings:
        """The settings from the sweeper's keys; ConfigError naming the first unknown or bad key."""
        from omegaconf import OmegaConf

        settings = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in settings if k not in names and k != "_target_")
        if unknown:
            raise ConfigError(
                f"hydra.sweeper.{unknown[0]} is not a setting of this sweeper: {', '.join(sorted(names))}"
            )
        made = cls(**{k: v for k, v in settings.items() if k in names})
        if problems := made.problems():
            raise ConfigError(problems[0])
        return made


@dataclass
class BoundarySettings(GridSettings):
    """hydra/sweeper=boundary's keys (conf/hydra/sweeper/boundary.yaml)."""

    mode: Any = "ratio"  # ratio: per weight decay, the critical ratio; wd: per ratio, the critical weight decay
    values: Any = None  # the searched points; null: `steps` geometric points from lo to hi
    lo: Any = 0.125
    hi: Any = 8.0
    steps: Any = 13
    sections: Any = 2  # k-section: k-1 probes per round and unsettled search
    share: Any = 0.5  # a point groks when at least this share of its seeds do
    seeds: Any = field(default_factory=lambda: [0, 1, 2])
    screen: Any = True  # probe with the first seed; every seed only at the final bracket's ends
    max_rounds: Any = 30

    def problems(self) -> list[str]:
        out = super().problems()
        if self.mode not in BOUNDARY_KEYS:
            out.append(_problem("mode", self.mode, "ratio or wd"))
        if not (_is_int(self.sections) and 2 <= self.sections <= 64):
            out.append(_problem("sections", self.sections, "an integer in 2..64"))
        if not (_is_num(self.share) and 0 < self.share <= 1):
            out.append(_problem("share", self.share, "a share in (0, 1]"))
        if not (_is_int(self.max_rounds) and self.max_rounds >= 1):
            out.append(_problem("max_rounds", self.max_rounds, "an integer >= 1"))
        if not isinstance(self.screen, bool):
            out.append(_problem("screen", self.screen, "true or false"))
        if self.seeds is not None and (
            not isinstance(self.seeds, (list, tuple)) or not self.seeds or not all(_is_int(s) for s in self.seeds)
        ):
            out.append(_problem("seeds", self.seeds, "a list of integers, or null for train.seed=... "))
        if self.values is None:
            if not (all(_is_num(x) and x > 0 for x in (self.lo, self.hi)) and self.lo < self.hi):
                out.append(f"hydra.sweeper.lo={self.lo!r}, hi={self.hi!r}: need 0 < lo < hi (or values: [...])")
            elif not (_is_int(self.steps) and 2 <= self.steps <= 1000):
                out.append(_problem("steps", self.steps, "an integer in 2..1000"))
        elif (
            not isinstance(self.values, (list, tuple))
            or len(self.values) < 2
            or any(not _is_num(v) or v <= 0 for v in self.values)
        ):
            out.append(f"hydra.sweeper.values={self.values!r}: at least two positive numbers")
        return out

    def ladder_values(self) -> list[float]:
        """The searched points, ascending: `values`, or `steps` geometric points from lo to hi (6 digits)."""
        if self.values is not None:
            return sorted({float(v) for v in self.values})
        step = math.log(self.hi / self.lo) / (self.steps - 1)
        return [float(f"{self.lo * math.exp(step * i):.6g}") for i in range(self.steps)]

    def need(self, n_seeds: int) -> int:
        """How many of a point's seeds must grok for the point to grok."""
        return max(1, math.ceil(self.share * n_seeds - 1e-9))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------------------------------- ranges
def _fmt(x: float, integral: bool) -> str:
    return str(int(round(x))) if integral else f"{float(f'{x:.12g}')!r}"


def expand_ellipsis(key: str, values: list[str]) -> list[str]:
    """`8,16,...,256` -> the progression the leading terms imply, up to and including the last term.

    Two or more leading terms and one final term. Geometric when the terms share a ratio, arithmetic when
    they share a step; with two leading terms that fit both (8,16,...,256), geometric: widths and weight
    decays are swept in powers. Raises ValueError naming the key when no progression reaches the end.
    """
    if ELLIPSIS not in values:
        return values
    where = values.index(ELLIPSIS)
    head, tail = values[:where], values[where + 1 :]
    spec = ",".join(values)
    if len(head) < 2 or len(tail) != 1:
        raise ValueError(f"{key}={spec}: write at least two terms before '...' and exactly one after it")
    try:
        terms, end = [float(v) for v in head], float(tail[0])
    except ValueError:
        raise ValueError(f"{key}={spec}: a range with '...' needs numbers") from None
    integral = all(float(v).is_integer() and "." not in v for v in [*head, tail[0]])

    def walk(nxt) -> list[float] | None:
        seq = list(terms)
        while len(seq) < 10_000:
            if math.isclose(seq[-1], end, rel_tol=1e-9, abs_tol=1e-12):
                return seq
            if (end - seq[-1]) * (seq[-1] - seq[0]) < 0 or abs(seq[-1] - seq[0]) > abs(end - seq[0]) * (1 + 1e-9):
                return None
            seq.append(nxt(seq[-1]))
        return None

    candidates = []
    if all(t != 0 for t in terms):
        ratio = terms[1] / terms[0]
        if ratio > 0 and ratio != 1 and all(math.isclose(b / a, ratio) for a, b in zip(terms, terms[1:])):
            candidates.append(("geometric", walk(lambda x: x * ratio)))
    step = terms[1] - terms[0]
    if step != 0 and all(math.isclose(b - a, step, abs_tol=1e-12) for a, b in zip(terms, terms[1:])):
        candidates.append(("arithmetic", walk(lambda x: x + step)))
    for kind, seq in candidates:
        if seq is not None:
            log.info(f"{key}: {spec} read as the {kind} progression {len(seq)} terms long")
            return [_fmt(x, integral) for x in seq]
    raise ValueError(f"{key}={spec}: no arithmetic or geometric progression from {','.join(head)} reaches {tail[0]}")


# ---------------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One cell of the plan: what cells.json records before it runs, and the class it shares a config with."""

    num: int
    overrides: list[str]
    dir: str
    coords: dict
    split: str
    cls: int  # index into Plan.configs: the checked config of the cells that differ from this one only in seed
    seed: int | None  # the seed this cell sets (None: the class config's own)

    def manifest(self) -> dict:
        return {"num": self.num, "overrides": list(self.overrides), "dir": self.dir, "coords": self.coords,
                "split": self.split}  # fmt: skip


@dataclass
class Plan:
    cells: list[Cell]
    configs: list  # one checked, composed config per class


def seed_of(overrides: list[str], domain=None) -> tuple[tuple[str, ...], int | None, bool]:
    """(the overrides but the seed's, the seed as an integer, whether the seed is a plain integer in its domain:
    train.seed's schema, grokpipe.config.validate.TRAIN_SCHEMA, unless `domain` is given)."""
    if domain is None:
        from grokpipe.config.validate import TRAIN_SCHEMA

        domain = TRAIN_SCHEMA["seed"]
    rest, seed, plain = [], None, True
    for text in overrides:
        key, _, value = text.partition("=")
        if key == SEED_KEY:
            try:
                seed = int(value)
            except ValueError:
                plain = False
            else:
                plain = str(seed) == value.strip() and domain.lo <= seed <= domain.hi
            rest.append(f"{SEED_KEY}=*")
        else:
            rest.append(text)
    return tuple(rest), seed, plain


def plan_cells(
    cells: list[list[str]],
    sweep_dir: Path,
    compose: Callable[[list[str], int], Any],
    subdir: str,
    split_of: Callable[[Any], str],
) -> Plan:
    """Compose and check one config per class of cells (the cells that differ only in a plain integer seed), then
    plan every cell from its class: its dir, coordinates (never the seed: one class, one point) and split protocol.

    `compose(overrides, num)` composes cell `num` and checks it, returning its resolved `Run`
    (grokpipe.config.validate.prepare, with the cell's coordinates; it exits with one line if the cell is not
    allowed); `subdir` is hydra.sweep.subdir unresolved. A cell whose seed is not a plain integer, or a sweep whose
    subdir is not the cell's number, is composed on its own (the slow path Hydra would take for every cell)."""
    from grokpipe.config.validate import TRAIN_SCHEMA

    classes: dict[tuple, int] = {}
    runs, planned = [], []
    for num, overrides in enumerate(cells):
        overrides = list(overrides)
        rest, seed, plain = seed_of(overrides, TRAIN_SCHEMA["seed"])
        if subdir != DEFAULT_SUBDIR or not plain:
            cls = len(runs)
            runs.append(compose(overrides, num))
            cfg_dir = str(sweep_dir / str(runs[cls].cfg.hydra.sweep.subdir))
            seed = None
        else:
            cls = classes.get(rest)
            if cls is None:
                cls = classes[rest] = len(runs)
                runs.append(compose(overrides, num))
                seed = None  # the class config holds this cell's seed itself
            cfg_dir = str(sweep_dir / str(num))
        run = runs[cls]
        planned.append(Cell(num, overrides, cfg_dir, dict(run.coords), split_of(run.cfg.task), cls, seed))
    return Plan(planned, [r.cfg for r in runs])


def group_packs(
    plan: Plan, shape_of: Callable[[Any], str], max_members: int | None, caps: dict[str, int] | None = None
) -> list[list[int]]:
    """Positions in plan.cells grouped by shape (`shape_of` a class config, as text: a class's cells share it), in
    grokpipe.config.packing.group_by_shape's order, at most `max_members` a pack (or caps[shape] for a shape there);
    one key per class."""
    from grokpipe.config.packing import group_keys

    keys: dict[int, str] = {}
    for cell in plan.cells:
        if cell.cls not in keys:
            keys[cell.cls] = shape_of(plan.configs[cell.cls])
    return group_keys([keys[cell.cls] for cell in plan.cells], max_members, caps)


def fill_slots(packs: list[list[int]], slots: int, cost: Callable[[list[int]], float]) -> list[list[int]]:
    """Packs for a launcher that runs `slots` jobs at a time: the costliest pack halved while there are fewer packs
    than slots (so no slot idles while cells wait in a pack), then ordered costliest first (the longest job does not
    start last). `cost`: a pack's expected work."""
    packs = [list(p) for p in packs]
    while len(packs) < slots and any(len(p) > 1 for p in packs):
        big = max((p for p in packs if len(p) > 1), key=cost)
        k = packs.index(big)
        packs[k : k + 1] = [big[: (len(big) + 1) // 2], big[(len(big) + 1) // 2 :]]
    return sorted(packs, key=cost, reverse=True)


# ---------------------------------------------------------------------------------------------------- the boundary
# mode -> (the key the sweep lists: one search per value, the key searched)
BOUNDARY_KEYS = {"ratio": ("optim.wd", "model.ratio"), "wd": ("model.ratio", "optim.wd")}


def interior(a: int, b: int, k: int) -> list[int]:
    """The k-section of the open index interval (a, b): up to k-1 distinct indices strictly inside it."""
    return sorted({round(a + j * (b - a) / k) for j in range(1, k)} - {a, b})


class Search:
    """One search along the ladder at one value of the axis, from the verdicts of its points so far."""

    def __init__(self, n: int) -> None:
        self.n = n  # ladder length
        self.verdicts: dict[int, bool] = {}  # index -> grokked (every seed's verdict, or the first seed's)
        self.confirmed: set[int] = set()  # indices every seed has run

    def bracket(self) -> tuple[int, int, list[int]]:
        """(a, b, contradictions): a = the largest failing index (-1: none), b = the smallest grokking index above
        it (n: none); grokking indices below a contradict monotonicity."""
        fails = [i for i, g in self.verdicts.items() if not g]
        a = max(fails, default=-1)
        b = min((i for i, g in self.verdicts.items() if g and i > a), default=self.n)
        return a, b, sorted(i for i, g in self.verdicts.items() if g and i < a)

    def next(self, k: int, screen: bool) -> tuple[list[int], list[int]]:
        """(indices to probe, indices to run with every seed); both empty when the search is settled."""
        a, b, _ = self.bracket()
        if self.n and self.n - 1 not in self.verdicts:  # the top first: it decides "above range" alone, and a
            return sorted({self.n - 1, *interior(a, self.n - 1, k)[: k - 2]}), []  # top that groks stops early
        if b - a > 1:
            return interior(a, b, k), []
        ends = [i for i in (a, b) if 0 <= i < self.n and i not in self.confirmed]
        return [], ends if screen else []


# ---------------------------------------------------------------------------------------------------- the ConfigStore
@dataclass
class GridSweeperConf(GridSettings):
    """hydra/sweeper=grid as registered in Hydra's ConfigStore (`grokpipe_grid`; conf/hydra/sweeper/grid.yaml
    extends it)."""

    _target_: str = "hydra_plugins.grokpipe_plugins.grid_sweeper.GridSweeper"


@dataclass
class BoundarySweeperConf(BoundarySettings):
    """hydra/sweeper=boundary as registered in Hydra's ConfigStore (`grokpipe_boundary`)."""

    _target_: str = "hydra_plugins.grokpipe_plugins.boundary_sweeper.BoundarySweeper"
