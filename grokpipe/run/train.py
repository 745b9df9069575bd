"""The loop: one lifecycle for a single run and for a pack of runs of one shape.

`train(cfgs, run_dirs)` builds each run's task, model and record, stacks the members (`grokpipe.run.stack`), and
trains them with one optimiser over the stack; each evaluation computes the enabled measures, and the stopping
rule (`grokpipe.run.stopping`) decides per member. A single run is a pack of one (`run(cfg, run_dir)`). Every member
gets its own run dir: metrics.csv, summary.json, checkpoints, curves.png and W&B run (`grokpipe.run.record`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from grokpipe.config.packing import check_packable
from grokpipe.config.validate import Machine, Run, budget, prepare
from grokpipe.core.checkpoint import DIR, LAST, set_rng_state
from grokpipe.core.errors import ConfigError
from grokpipe.core.outputs import StorageError
from grokpipe.losses import build_loss
from grokpipe.measures import Evaluation, build_measures, columns, first_crossings
from grokpipe.models import build_model
from grokpipe.optim import build_optimizer
from grokpipe.run.device import keep_freed_memory, pick_device
from grokpipe.run.memory import check_memory
from grokpipe.run.progress_bar import ProgressBar
from grokpipe.run.provenance import cpu_info
from grokpipe.run.record import RunRecord, read_summary
from grokpipe.run.signals import StopRequest
from grokpipe.run.stack import GraphedStep, make_stack
from grokpipe.run.stopping import StoppingRule
from grokpipe.tasks import build_task


def apply_determinism(tc: DictConfig, device: torch.device) -> None:
    """The settings a run's bits depend on: `train.threads` (else torch's default) and, with
    `train.deterministic`, torch's deterministic algorithms (warn-only: an op without a deterministic kernel warns
    and runs), cuDNN's deterministic kernels without autotuning, and on CUDA cuBLAS's fixed workspace unless the
    environment sets CUBLAS_WORKSPACE_CONFIG. All recorded in provenance.json (docs/reproducibility.md)."""
    deterministic = tc.get("deterministic", True)  # a config recorded before the key existed: the default
    if tc.get("threads"):
        torch.set_num_threads(tc.threads)
    _set_deterministic(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and torch.backends.cudnn.benchmark
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _set_deterministic(mode: bool) -> None:
    """torch.use_deterministic_algorithms(mode, warn_only=True), which also sets the compiler's copy of the flag and
    so imports the compiler (0.9 s of start-up). A run compiles nothing: while the compiler is not loaded, only the
    flag the eager kernels read is set."""
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is None and hasattr(torch._C, "_set_deterministic_algorithms"):
        torch._C._set_deterministic_algorithms(mode, warn_only=True)
    else:
        torch.use_deterministic_algorithms(mode, warn_only=True)


def run(cfg: DictConfig, run_dir: Path, sweep_dir: str | None = None) -> dict:
    """Train one config in `run_dir`, resuming from its checkpoints if any. Returns its summary.json."""
    return train([cfg], [run_dir], sweep_dir)[0]


def _resolved(item) -> bool:
    """A `Run` prepared on a machine: not checked again."""
    return isinstance(item, Run) and item.machine is not None


def machine_of(name: str) -> Machine:
    """train.device resolved on this machine (grokpipe.run.device), with the CPU's flags."""
    return Machine(pick_device(name).type, frozenset(cpu_info()[1]))


def train(cfgs: list[DictConfig | Run], run_dirs: list[Path], sweep_dir: str | None = None) -> list[dict]:
    """Train runs of one shape together; each gets its outputs in its run dir. Returns their summaries. Each config
    is checked and resolved once, on this machine (`prepare`; read-only afterwards): here, or by the caller, which
    then passes the `Run` it got; `sweep_dir`: the sweep the runs are cells of (their W&B group).

    A run whose checkpoint says it finished is not trained again (its summary.json is returned)."""
    if len(cfgs) != len(run_dirs):
        raise ValueError(f"{len(cfgs)} configs but {len(run_dirs)} run dirs")
    runs = [c if _resolved(c) else prepare(c, machine_of, sweep_dir) for c in cfgs]
    cfgs = [r.cfg for r in runs]
    check_packable(cfgs)
    keep_freed_memory()
    tc = cfgs[0].train
    device = pick_device(tc.device)
    apply_determinism(tc, device)
    tasks = [build_task(cfg.task) for cfg in cfgs]
    checked = check_memory(cfgs, device, tasks[0])  # False: counted on the first member's model, once built
    results: list[dict | None] = [None] * len(cfgs)
    records, models, splits, ckpts, index = [], [], [], [], []
    for n, (cfg, run_dir, task) in enumerate(zip(cfgs, run_dirs, tasks)):
        record = RunRecord(cfg, run_dir, task)
        ckpt = record.load(device)
        if RunRecord.finished(ckpt, budget(cfg.train)[0]):
            results[n] = read_summary(record.run_dir)
            continue
        torch.manual_seed(cfg.train.seed)  # equal seeds give equal initial weights, alone or packed
        model = build_model(cfg.model, task.spec)
        checked = checked or check_memory(cfgs, device, task, model)
        models.append(model.to(device))
        splits.append(task.split().to(device))
        records.append(record)
        ckpts.append(ckpt)
        index.append(n)
    if not records:
        return results
    start = _align(records, ckpts, device)
    vmap = len(records) > 1 or runs[0].engine == "packed"
    loop = Loop(records, models, splits, ckpts, start, device, vmap)
    if tc.compile == "always":
        compile_model(loop, sweep_dir)
    for n, summary in zip(index, loop.run()):
        results[n] = summary
    return results


COMPILE_CACHE = ".compile_cache"  # in a sweep dir: inductor's on-disk cache, shared by the sweep's cells


def compile_model(loop: Loop, sweep_dir: str | None) -> None:
    """A single run's model through torch.compile (inductor), its step and evaluation compiled on first call. A
    sweep's cells share one on-disk cache (<sweep dir>/.compile_cache, unless TORCHINDUCTOR_CACHE_DIR is set), so
    only the first cell of a shape compiles cold. A pack stays eager (not measured compiled): one note."""
    if loop.stack.m > 1 or not hasattr(loop.stack, "model"):
        print("note: train.compile: a pack is not compiled; it trains eager", flush=True)
        return
    if sweep_dir is not None and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(sweep_dir) / COMPILE_CACHE)
    loop.stack.model.compile()


def _align(records: list[RunRecord], ckpts: list, device) -> int:
    """The epoch every member resumes from. A pack killed while writing its members' checkpoints leaves some a
    checkpoint ahead; those go back to their checkpoint of the earliest member's epoch (last.prev.pt or a kept one,
    or fresh at epoch 0), so the pack resumes together. Raises ConfigError if one has none."""
    starts = [0 if c is None else c.epoch for c in ckpts]
    start = min(starts)
    for n, (rec, epoch) in enumerate(zip(records, starts)):
        if epoch == start:
            continue
        ckpt = None if start == 0 else rec.load_at(start, device)
        if ckpt is None and start != 0:
            raise ConfigError(
                f"cannot pack: {rec.run_dir} has no checkpoint of epoch {start}, where the rest of the pack "
                f"resumes (it is at {epoch}); resume the runs one by one (launch the sweep without packing)"
            )
        print(f"{rec.run_dir}: back from epoch {epoch} to {start}, where the rest of the pack resumes", flush=True)
        ckpts[n] = ckpt
        rec.prior_seconds = 0.0 if ckpt is None else ckpt.elapsed
    return start


class Loop:
    """The members' training from `start` to the end: the step, the evaluations, the host copies, the stops."""

    def __init__(self, records, models, splits, ckpts, start: int, device, vmap: bool) -> None:
        cfg, tc = records[0].cfg, records[0].cfg.train
        self.records, self.start, self.device, self.tc = records, start, device, tc
        self.last, self.unit = budget(tc)  # the loop counts epochs, or optimizer steps on random batches
        self.task = records[0].task
        self.stack = make_stack(models, vmap=vmap, forward=tc.pack_forward)
        self.optimizer = build_optimizer(self.stack.flat, [r.cfg.optim for r in records], self.stack.layout)
        self.loss = build_loss(cfg.loss)
        self.measures = []
        for measure in build_measures(cfg.measures, self.task):
            why = measure.applies(self.stack)
            if why is None:
                self.measures.append(measure)
            else:  # a measure of another task or model: the run goes on without its columns
                print(f"note: measure {measure.name} does not apply: {why}; not computed", flush=True)
        self.fields = columns(self.measures)
        self.n_params = self.stack.flat.shape[1]
        self.shuffles = [torch.Generator().manual_seed(r.cfg.train.seed) for r in records]
        for i, ckpt in enumerate(ckpts):
            if ckpt is not None:
                self.stack.load_member(i, ckpt.model)
                self.optimizer.load_member(i, ckpt.optimizer)
                self.shuffles[i].set_state(ckpt.shuffle)
                if len(records) == 1:
                    set_rng_state(ckpt.rng)
        self.rule = StoppingRule(self.task, tc.grok_window, [r.cfg.train.patience for r in records], device)
        for i, rec in enumerate(records):
            rec.open(start, self.fields, self.n_params * self.stack.flat.element_size(), device, len(records) > 1)
            self.rule.replay(i, rec.metrics.rows)  # the rule's state is derived from the rows already written
        self.active = (self.rule.stop_epoch < 0).view(-1, 1).clone()
        stack = lambda name: torch.stack([getattr(s, name) for s in splits])  # noqa: E731
        self.x = {"train": stack("train_x"), "val": stack("val_x")}
        self.y = {"train": stack("train_y"), "val": stack("val_y")}
        self.full_batch = tc.batch_size is None or tc.batch_size >= self.y["train"].shape[1]
        graphed = device.type == "cuda" and vmap and tc.cuda_graph and self.full_batch
        # a CUDA graph needs autocast's cast cache off
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16", cache_enabled=False if graphed else None
        )
        self.graphed_step = GraphedStep(self.stack.zero_grad, self._full_body, enabled=graphed)
        if start:
            print(f"resuming {_who(records)} from {self.count} {start}", flush=True)

    @property
    def count(self) -> str:
        """What one iteration of the loop is, in words: an epoch, or a step."""
        return self.unit[:-1]

    # ---------------------------------------------------------------- the step: no logging, no I/O, no config
    def _body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.autocast:
            losses = self.loss(self.stack.forward(x), y)
        losses.float().sum().backward()  # members are independent: d(sum)/d(theta_m) = d(loss_m)/d(theta_m)
        self.optimizer.step(self.stack.grad, self.active)

    def _full_body(self) -> None:
        self._body(self.x["train"], self.y["train"])

    def epoch(self) -> None:
        """One iteration of the loop: an epoch (the full batch, or every minibatch of one shuffle), or in steps one
        optimizer step on a random batch (seed 004: batch_size samples without replacement, drawn afresh each step)."""
        if self.full_batch:
            self.graphed_step()
            return
        order = torch.stack([torch.randperm(self.y["train"].shape[1], generator=g) for g in self.shuffles])
        if self.unit == "steps":
            order = order[:, : self.tc.batch_size]
        order = order.to(self.device)
        rows = torch.arange(order.shape[0], device=self.device).view(-1, 1)
        for idx in order.split(self.tc.batch_size, dim=1):
            self.stack.zero_grad()
            self._body(self.x["train"][rows, idx], self.y["train"][rows, idx])

    def due(self, k: int) -> set[str]:
        """The columns of the measures due at evaluation number k (each measure has its own cadence)."""
        return {c for m in self.measures if k % m.every == 0 for c in m.columns}

    @torch.no_grad()
    def evaluate(self, k: int) -> dict[str, torch.Tensor]:
        """Evaluation number k: every due measure, column -> [M] (NaN where a measure is not due)."""
        with self.autocast:
            outputs = {s: self.stack.forward(x).float() for s, x in self.x.items()}
        ev = Evaluation(outputs, self.y, self.x, self.task, self.loss, self.stack, self.optimizer)
        nan = torch.full((self.stack.m,), float("nan"), dtype=torch.float64, device=self.device)
        row = {}
        for measure in self.measures:
            values = measure(ev) if k % measure.every == 0 else {}
            row.update({c: values[c].double() if c in values else nan for c in measure.columns})
        return row

    # ---------------------------------------------------------------- the lifecycle around it
    def run(self) -> list[dict]:
        tc, records = self.tc, self.records
        # a host copy every evaluation on the CPU (free); on a GPU every sync_every, so epochs stay queued
        sync = tc.sync_every if self.device.type == "cuda" else 1
        value_fields = self.fields[1:-1]
        buf = torch.zeros(sync, self.stack.m, len(value_fields), dtype=torch.float64, device=self.device)
        pending: list[tuple[int, float]] = []
        bar = None
        if len(records) == 1:
            metric = self.task.metric_names[0]
            bar = ProgressBar(self.last, self.start, tc.print_every, records[0].name, metric, self.count)
        t0, epoch, n_evals = time.time(), self.start, self.start // tc.eval_every
        elapsed = lambda rec: rec.prior_seconds + time.time() - t0  # noqa: E731
        try:
            with StopRequest() as stop:
                for epoch in range(self.start + 1, self.last + 1):
                    self.epoch()
                    if epoch % tc.eval_every == 0:
                        n_evals += 1
                        row = self.evaluate(n_evals)
                        buf[len(pending)] = torch.stack([row[c] for c in value_fields], dim=1)
                        pending.append((epoch, time.time(), self.due(n_evals)))
                        self.active.copy_(self.rule.update(epoch, row).view(-1, 1))
                    periodic = any(k and epoch % k == 0 for k in (tc.latest_every, tc.checkpoint_every))
                    if len(pending) == sync or periodic or epoch == self.last or stop.requested:
                        self._host_copy(pending, buf, epoch, t0, bar)
                        pending.clear()
                    if not any(r.status == "running" for r in records) or stop.requested:
                        break
                if bar is not None:
                    bar.close()
                for i, rec in enumerate(records):
                    if rec.status == "running":
                        interrupted = stop.requested
                        grokked = self.rule.outcome(i)["grok_epoch"] is not None
                        rec.status = "interrupted" if interrupted else ("grokked" if grokked else "completed")
                        self._finish(i, epoch, elapsed(rec))
                if stop.requested:
                    single = len(records) == 1
                    saved = "checkpoint saved" if single else "checkpoints saved"
                    where = f"launching on {records[0].run_dir}" if single else "packing the same runs again"
                    print(f"interrupted at {self.count} {epoch}: {saved}, resume by {where}", flush=True)
                    stop.hand_over()
        except StorageError as exc:
            for rec in records:
                rec.abandon()
            saved = min(r.saved_epoch for r in records)
            where = records[0].ckpt_dir / LAST if len(records) == 1 else f"each member's {DIR}/{LAST}"
            kept = (
                f"last good checkpoint: {where} ({self.count} {saved})"
                if saved
                else "no checkpoint yet: it starts over"
            )
            raise StorageError(exc.errno, f"{exc.strerror}; run stopped at {self.count} {epoch}, {kept}") from exc
        except BaseException:
            for rec in records:
                rec.abandon()
            raise
        return [r.summary for r in records]

    def _host_copy(self, pending, buf, epoch: int, t0: float, bar) -> None:
        """The one host copy per window: write each running member's rows, finish the members that stopped,
        then write the periodic checkpoints of the others."""
        tc = self.tc
        host = buf[: len(pending)].tolist() if pending else []
        stops = self.rule.stop_epoch.tolist()
        for i, rec in enumerate(self.records):
            if rec.status != "running":
                continue
            for (ev_epoch, stamp, due), values in zip(pending, host):
                if 0 <= stops[i] < ev_epoch:
                    break
                row = {"epoch": ev_epoch}
                row.update({c: (v if c in due else None) for c, v in zip(self.fields[1:-1], values[i])})
                row["elapsed"] = rec.prior_seconds + stamp - t0
                rec.record(row)
                if bar is not None:
                    bar.update(row)
            if stops[i] >= 0:
                rec.status = "diverged" if self.rule.outcome(i)["diverged"] else "grokked"
                self._finish(i, stops[i], rec.prior_seconds + time.time() - t0)
                continue
            for kind, every in (("kept", tc.checkpoint_every), ("last", tc.latest_every)):
                if every and epoch % every == 0:
                    self._checkpoint(i, kind, epoch, rec.prior_seconds + time.time() - t0)
        if len(self.records) > 1 and tc.print_every and epoch // tc.print_every != (epoch - 1) // tc.print_every:
            running = sum(r.status == "running" for r in self.records)
            print(f"pack of {len(self.records)} {self.count} {epoch}/{self.last}: {running} running", flush=True)

    def _checkpoint(self, i: int, kind: str, epoch: int, elapsed: float) -> None:
        rec = self.records[i]
        model, optim = self.stack.member_state(i), self.optimizer.member_state(i)
        rec.checkpoint(kind, epoch, model, optim, self.shuffles[i].get_state(), elapsed)

    def _finish(self, i: int, epoch: int, elapsed: float) -> None:
        save_last = lambda: self._checkpoint(i, "last", epoch, elapsed)  # noqa: E731
        rec = self.records[i]
        outcome = {**self.rule.outcome(i), "crossed": first_crossings(self.measures, rec.metrics.rows)}
        rec.finish(outcome, epoch, elapsed, self.n_params, self.device, save_last)


def _who(records: list[RunRecord]) -> str:
    return str(records[0].run_dir) if len(records) == 1 else f"a pack of {len(records)}"
