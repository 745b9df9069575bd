"""The boundary sweeper (`hydra/sweeper=boundary`): the phase boundary searched for, not the whole grid evaluated.

Mode `ratio`: for each weight decay of the sweep (`optim.wd=0.1,1`), the critical ratio d_model / p, the smallest
width on the ladder (`values`, or `steps` geometric points from `lo` to `hi`) at which at least `share` of the seeds
grok within the budget. Mode `wd`: for each ratio of the sweep (`model.ratio=0.5,1`), the critical weight decay.
The assumption, stated in every report: at a fixed weight decay (ratio) grokking is monotone in the ratio (weight
decay): once a point groks, every larger one does. Evaluated cells that contradict it are listed, not hidden, and
the boundary is placed above the largest point that failed.

Search: the top of the ladder first (if it fails, nothing on the ladder groks; if it groks, it stopped early and
cost little), then k-section (`sections`) of the ladder's index range, every unsettled weight decay at once. With
`screen`, a probe runs the first seed only; once the bracket [last failing point, first grokking point] is adjacent,
its ends run further seeds, the fewest that can decide them (3 seeds, share 0.5: a second seed that agrees with the
first settles the point), and the search goes on if the seeds overturn a verdict. Each round's cells go out as one batch
through the chosen launcher (one SLURM array per round; packed with `pack=true`). The sweep dir's boundary.json
keeps the search: a relaunch of the same command reuses every finished cell and resumes in the round it stopped in.
A bracket search on a monotone predicate is bisection; none of the black-box optimisers' samplers does it, so it is
written here (about a hundred lines) rather than wrapped in one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import grokpipe.core.split as split
from grokpipe.core.cells import (
    BOUNDARY,
    BOUNDARY_FIELDS,
    MISSING,
    PLANNED,
    SUCCESS,
    CellDied,
    read_packs,
    write_cells,
)
from grokpipe.core.errors import fail
from grokpipe.sweep.plan import BOUNDARY_KEYS, BoundarySettings, BoundarySweeperConf, Cell, Plan, Search, interior
from hydra_plugins.grokpipe_plugins.grid_sweeper import GridSweeper

log = logging.getLogger(__name__)
ConfigStore.instance().store(
    group="hydra/sweeper", name="grokpipe_boundary", node=BoundarySweeperConf, provider="grokpipe"
)
STATE = "boundary.json"
KEYS = BOUNDARY_KEYS
SETTING_NAMES = ("mode", "values", "lo", "hi", "steps", "sections", "share", "seeds", "screen", "max_rounds")
__all__ = ["BoundarySweeper", "Search", "interior"]


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a number") from None


class BoundarySweeper(GridSweeper):
    SETTINGS = BoundarySettings

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        for name in SETTING_NAMES:
            setattr(self, name, getattr(self.settings, name))

    # ---------------------------------------------------------------- the command line and the ladder
    def _ladder_values(self) -> list[float]:
        return BoundarySettings.ladder_values(self)

    def _need(self, n_seeds: int) -> int:
        return BoundarySettings.need(self, n_seeds)

    def _split(self, arguments: list[str]) -> tuple[list[str], list[str], list[int]]:
        """(fixed overrides, the axis values, seeds) of the command line plus the preset's params."""
        axis_key, searched = KEYS[self.mode]
        texts = [*self._parse_config(), *arguments]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, axis, seeds = [], None, self.seeds
        for text, o in zip(texts, parser.parse_overrides(texts)):
            key = o.get_key_element()
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            if key == axis_key:
                axis = values
            elif key == "train.seed":
                seeds = [int(v) for v in values]
            elif key in (searched, "model.d_model" if self.mode == "ratio" else searched):
                raise ValueError(f"{key} is what hydra/sweeper=boundary searches: set hydra.sweeper.values or lo/hi")
            elif o.is_sweep_override():
                raise ValueError(f"{key} is swept: with hydra/sweeper=boundary only {axis_key} and train.seed are")
            else:
                fixed.append(text)
        if axis is None:
            raise ValueError(f"list the {axis_key} values to search at, e.g. {axis_key}=0.1,1")
        for v in axis:
            if not _num(v) > 0:
                raise ValueError(f"{axis_key}={v}: must be positive")
        return fixed, [str(v) for v in axis], list(seeds if seeds is not None else [0])

    def _compose(self, overrides: list[str], num: int):
        """A cell's config, checked; exits 2 with one line naming the cell if it is not allowed."""
        return self.compose_cell(overrides, num, " ".join(overrides[-3:]), "nothing more was launched").cfg

    def _ladder(self, fixed: list[str], axis: list[str]) -> list[tuple[float, str]]:
        """The searched points as (value, override), ascending. In ratio mode each ratio becomes the d_model the
        model's rule gives it (a multiple of its heads), and ratios that give the same d_model are one point."""
        values = self._ladder_values()
        if self.mode == "wd":
            return [(v, f"optim.wd={v:g}") for v in values]
        from grokpipe.config.validate import task_size

        points = {}
        for v in values:
            cfg = self._compose([*fixed, f"optim.wd={axis[0]}", f"model.ratio={v:g}"], 0)
            points.setdefault(int(cfg.model.d_model), cfg.model.d_model / task_size(cfg))
        return [(ratio, f"model.d_model={d}") for d, ratio in sorted(points.items())]

    def _coords(self, v: str, point: tuple[float, str], cfg) -> dict:
        """A cell's coordinates: the axis value and the searched point (in ratio mode the ratio and its width)."""
        axis_key, searched = KEYS[self.mode]
        return {axis_key: _num(v), searched: round(point[0], 6), "model.d_model": int(cfg.model.d_model)}

    def _axis_override(self, v: str) -> str:
        return f"{KEYS[self.mode][0]}={v}"

    # ---------------------------------------------------------------- the search
    def sweep(self, arguments: list[str]):
        try:
            arguments = self.expand(arguments)
            self.params = dict(text.split("=", 1) for text in self.expand(self._parse_config()))
            fixed, axis, seeds = self._split(arguments)
        except ValueError as exc:
            fail(str(exc))
        ladder = self._ladder(fixed, axis)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        settings = {
            "mode": self.mode, "fixed": fixed, "axis": axis, "seeds": seeds, "ladder": [o for _, o in ladder],
            "sections": self.sections, "share": self.share, "screen": bool(self.screen),
        }  # fmt: skip
        state = self._load_state(sweep_dir, settings)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # what marks a sweep dir, as Hydra's sweepers do
        first_seed_only = bool(self.screen) and len(seeds) > 1
        stopped = None
        for round_no in range(1, self.max_rounds + 1):
            searches = {v: self._search(state, v, len(ladder), seeds) for v in axis}
            todo = []
            for v, search in searches.items():
                probes, confirm = search.next(self.sections, first_seed_only)
                todo += (
                    [(v, i, seeds[0]) for i in probes]
                    if first_seed_only
                    else [(v, i, s) for i in probes for s in seeds]
                )
                todo += [(v, i, s) for i in confirm for s in self._more_seeds(state, v, i, seeds)]
            todo = [t for t in todo if not self._finished(state, t)]
            if not todo:
                break
            log.info(f"boundary round {round_no}: {len(todo)} cell{'s' * (len(todo) != 1)}")
            self._launch(state, sweep_dir, todo, fixed, ladder, round_no)
            if stopped := self._failure(state, todo):  # failed, not "did not grok": no verdict to search on
                log.error(f"boundary search stopped in round {round_no}: {stopped}")
                break
        else:
            log.warning(f"boundary search stopped after max_rounds={self.max_rounds} rounds, unsettled")
        rows = self._report(state, sweep_dir, axis, ladder, seeds, stopped)
        from grokpipe.core.cells import read_cells
        from grokpipe.results.figures import plot_boundary
        from grokpipe.sweep.summary import table

        plot_boundary(rows, table(read_cells(sweep_dir)), sweep_dir / "boundary.png", sweep_dir.name, self.share)
        for r in rows:
            log.info(
                f"{KEYS[self.mode][0]}={r['axis']}: critical {KEYS[self.mode][1].split('.')[1]} {r['critical']} "
                f"(bracket {r['bracket_lo']}..{r['bracket_hi']}, {r['status']}, {r['runs']} runs)"
            )
        return None

    def _load_state(self, sweep_dir: Path, settings: dict) -> dict:
        path = sweep_dir / STATE
        if path.exists():
            state = json.loads(path.read_text())
            if state["settings"] != settings:
                differ = sorted(k for k in settings if state["settings"].get(k) != settings[k])
                fail(
                    f"{sweep_dir} holds a boundary search with other settings (differs in: {', '.join(differ)}); "
                    "use a new hydra.sweep.dir"
                )
            log.info(f"resuming the boundary search in {sweep_dir}: {len(state['cells'])} cells known")
            return state
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return {"settings": settings, "cells": [], "rounds": []}

    @staticmethod
    def _key(v: str, i: int, seed: int) -> str:
        return f"{v}|{i}|{seed}"

    def _cell(self, state: dict, t: tuple) -> dict | None:
        key = self._key(*t)
        return next((c for c in state["cells"] if c["key"] == key), None)

    def _summary(self, cell: dict | None) -> dict | None:
        if cell is None:
            return None
        path = Path(cell["dir"]) / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return summary if summary.get("status") in SUCCESS else None

    def _failure(self, state: dict, todo: list) -> str | None:
        """The first of a round's cells that ended without a result (failed, or no summary.json), in one line."""
        for t in todo:
            cell = self._cell(state, t)
            try:
                summary = json.loads((Path(cell["dir"]) / "summary.json").read_text())
            except (OSError, ValueError):
                summary = {"status": MISSING, "error": "no summary.json: the job never ran or was killed"}
            if summary.get("status") not in SUCCESS:
                where = " ".join(cell["overrides"][-2:])
                return f"cell {cell['num']} ({where}) {summary.get('status')}: {summary.get('error')}"
        return None

    def _finished(self, state: dict, t: tuple) -> bool:
        return self._summary(self._cell(state, t)) is not None

    def _tally(self, state: dict, v: str, i: int, seeds: list[int]) -> tuple[int, int, list[int], dict | None]:
        """(seeds that grokked, seeds that did not, seeds not run yet, the first seed's summary) of one point."""
        done = {s: self._summary(self._cell(state, (v, i, s))) for s in seeds}
        grok = sum(bool(d["grokked"]) for d in done.values() if d is not None)
        fail = sum(not d["grokked"] for d in done.values() if d is not None)
        return grok, fail, [s for s in seeds if done[s] is None], done[seeds[0]]

    def _search(self, state: dict, v: str, n: int, seeds: list[int]) -> Search:
        """The verdict of every point probed at axis value v: decided once enough seeds grokked (or failed) for
        `share` to settle it; before that, the first seed's (a screen)."""
        search, need = Search(n), self._need(len(seeds))
        for i in range(n):
            grok, fail, _, first = self._tally(state, v, i, seeds)
            if grok >= need or fail > len(seeds) - need:
                search.confirmed.add(i)
                search.verdicts[i] = grok >= need
            elif first is not None:
                search.verdicts[i] = bool(first["grokked"])
        return search

    def _more_seeds(self, state: dict, v: str, i: int, seeds: list[int]) -> list[int]:
        """The fewest further seeds that could decide a screened point: as many as it still needs to grok, or one
        more than the failures it can still afford, whichever is less (the next round adds more if undecided)."""
        need = self._need(len(seeds))
        grok, fail, unrun, _ = self._tally(state, v, i, seeds)
        return unrun[: max(0, min(need - grok, len(seeds) - need - fail + 1))]

    def _launch(self, state: dict, sweep_dir: Path, todo: list, fixed: list[str], ladder: list, round_no: int) -> None:
        """One round's cells: new cells numbered after the known ones, all checked before any goes out, then one
        batch per contiguous run of cell numbers (one, except where a resumed round re-runs unfinished cells)."""
        jobs, composed = [], {}
        for t in todo:
            cell = self._cell(state, t)
            if cell is None:
                v, i, seed = t
                num = len(state["cells"])
                overrides = [*fixed, self._axis_override(v), ladder[i][1], f"train.seed={seed}"]
                cfg = composed[num] = self._compose(overrides, num)
                cell = {"num": num, "key": self._key(*t), "overrides": overrides,
                        "dir": str(sweep_dir / str(cfg.hydra.sweep.subdir)), "round": round_no,
                        "coords": self._coords(v, ladder[i], cfg), "split": split.of_config(cfg.task)}  # fmt: skip
                state["cells"].append(cell)
            jobs.append(cell)
        state["rounds"].append({"round": round_no, "cells": [c["num"] for c in jobs]})
        (sweep_dir / STATE).write_text(json.dumps(state, indent=1) + "\n")
        manifest = [{k: c[k] for k in ("num", "overrides", "dir", *PLANNED) if k in c} for c in state["cells"]]
        write_cells(sweep_dir, manifest, keep_packs=True)
        jobs.sort(key=lambda c: c["num"])
        try:
            if self.pack is not False:  # every cell's config, composed once: the cells known from before as well
                cfgs = [composed.get(c["num"]) or self._compose(c["overrides"], c["num"]) for c in jobs]
                if self.packs(cfgs):
                    self._launch_packed(sweep_dir, jobs, cfgs)
                    return
            runs, start = [], 0
            for n, cell in enumerate(jobs):
                if n and cell["num"] != jobs[n - 1]["num"] + 1:
                    runs.append(jobs[start:n])
                    start = n
            runs.append(jobs[start:])
            for run in runs:
                results = self.launcher.launch([c["overrides"] for c in run], initial_job_idx=run[0]["num"])
                for r in results:
                    _ = r.return_value
        except CellDied as exc:  # its summary.json says failed: the point is decided by the seeds that finished
            log.warning(f"a cell died: {exc}")

    def _launch_packed(self, sweep_dir: Path, jobs: list[dict], composed: list) -> None:
        """The round's cells (`composed`: their configs) packed by shape, through the grid sweeper's pack launch;
        pack numbers go on from the earlier rounds' (packs.json keeps all)."""
        cells = [Cell(c["num"], c["overrides"], c["dir"], c.get("coords", {}), c.get("split", ""), n, None)
                 for n, c in enumerate(jobs)]  # fmt: skip
        self.launch_packs(Plan(cells, composed), cells, sweep_dir, k0=len(read_packs(sweep_dir)))

    # ---------------------------------------------------------------- the report
    def _report(
        self, state: dict, sweep_dir: Path, axis: list[str], ladder: list, seeds: list[int], stopped: str | None = None
    ) -> list[dict]:
        """boundary.csv and boundary.json's `boundary`: per axis value, the critical point, its bracket, the cost.
        `stopped`: why the search ended before it settled (a cell that failed)."""
        import csv

        rows = []
        for v in axis:
            search = self._search(state, v, len(ladder), seeds)
            a, b, contra = search.bracket()
            mine = [c for c in state["cells"] if c["key"].split("|")[0] == v]
            summaries = [s for s in (self._summary(c) for c in mine) if s is not None]
            settled = not any(search.next(self.sections, bool(self.screen) and len(seeds) > 1))
            if b == 0:
                status = "below range: the smallest point groks"
            elif a == len(ladder) - 1:
                status = "above range: no point groks"
            else:
                status = "found" if settled else (f"stopped: {stopped}" if stopped else "unsettled")
            if contra:
                status += f"; {len(contra)} point(s) contradict monotonicity"
            rows.append(
                {
                    "mode": self.mode,
                    "axis": _num(v),
                    "critical": round(ladder[b][0], 6) if b < len(ladder) else None,
                    "bracket_lo": round(ladder[a][0], 6) if a >= 0 else None,
                    "bracket_hi": round(ladder[b][0], 6) if b < len(ladder) else None,
                    "status": status,
                    "seeds": len(seeds),
                    "points": len(search.verdicts),
                    "runs": len(mine),
                    "run_epochs": sum(int(s.get("epochs_run") or 0) for s in summaries),
                    "contradictions": " ".join(f"{ladder[i][0]:.6g}" for i in contra),
                }
            )
        with open(sweep_dir / BOUNDARY, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=BOUNDARY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        state["boundary"] = rows
        state["assumption"] = (
            f"grokking is monotone in {KEYS[self.mode][1]} at fixed {KEYS[self.mode][0]}: "
            "once a point groks (share of seeds), every larger one does"
        )
        (sweep_dir / STATE).write_text(json.dumps(state, indent=1) + "\n")
        return rows
