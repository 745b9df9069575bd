"""Every check on a composed config, run before anything heavy. An error names the key, the value, what is allowed.

Each group's keys are checked against the schema of the part its `_target_` names (grokpipe.core.schema), the logger's
too; `train` has its schema here. Then the checks across keys. `prepare` then resolves the run once: every value the
config implies (d_model from model.ratio, the W&B group of a sweep's cell, and where the machine is known the precision
and the engine) is written into the config, which is read-only from then on, and returned as one frozen `Run`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from grokpipe.core.cells import coordinates, sweep_group
from grokpipe.core.errors import ConfigError
from grokpipe.core.schema import Bool, Choice, Float, Int, Nullable, check_node
from grokpipe.core.secrets import SECRET_KEY

PARTS = ("task", "model", "loss", "optim")
TRAIN_SCHEMA = {
    "max_epochs": Nullable(Int(1, 10**9)),  # the budget: max_epochs, or max_steps (the other null)
    "max_steps": Nullable(Int(1, 10**9)),
    "batch_size": Nullable(Int(1, 2**40)),
    "eval_every": Int(1, 10**9),
    "grok_window": Int(1, 10**6),
    "patience": Nullable(Int(0, 10**9)),
    "seed": Int(0, 2**63 - 1),
    "device": Choice(("auto", "cpu", "cuda", "mps")),
    "precision": Choice(("fp32", "bf16", "auto")),
    "deterministic": Bool(),
    "threads": Nullable(Int(1, 1024)),  # 4096 OpenMP threads crash the process (segfault in backward, 24 GiB here)
    "engine": Choice(("auto", "loop", "packed")),
    "pack_forward": Choice(("auto", "batched", "vmap")),
    "compile": Choice(("never", "always", "auto")),
    "sync_every": Int(1, 10**6),
    "cuda_graph": Bool(),
    "latest_every": Int(0, 10**9),
    "checkpoint_every": Int(0, 10**9),
    "print_every": Int(0, 10**9),
    "plot": Bool(),
    "print_summary": Bool(),
}
RATIO_SLACK = 2.0  # a width derived from model.ratio may miss it by this factor at most (the heads' rounding)
# what the memory a model needs grows with
REQUIRED_MEASURES = {"loss": "train_loss (divergence)", "task_metrics": "the task's criterion"}


def _plain(cfg: DictConfig, group: str) -> dict:
    if group not in cfg:  # e.g. `measures=[]`
        raise ConfigError(f"{group} is missing: choose from conf/{group}/")
    try:
        node = OmegaConf.to_container(cfg[group], resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{group} is not allowed: {str(exc).splitlines()[0]}") from None
    if not isinstance(node, dict):
        raise ConfigError(f"{group}={node!r} is not allowed: must be a config group (see conf/{group}/)")
    return node


def part_class(cfg: DictConfig, group: str, path: str | None = None, base: type | None = None) -> type:
    """The class `cfg[group]._target_` names: one declaring its keys' SCHEMA (ConfigError when there is none), and a
    subclass of `base` where given (a logger). `path` is the node's key in the whole config where it is not the group
    (a measure: `measures.<name>`)."""
    import importlib

    path = path or group
    conf = f"conf/{path.split('.')[0]}/"
    target = cfg[group].get("_target_") if group in cfg else None
    if not isinstance(target, str):
        raise ConfigError(f"{path}._target_={target!r} is not allowed: must name a class (see {conf})")
    module, _, name = target.rpartition(".")
    try:  # not hydra.utils.get_class: it logs every miss, a second line besides the one error
        found = getattr(importlib.import_module(module), name, None)
    except Exception:  # noqa: BLE001 - a module path can fail to import in any way
        found = None
    if not isinstance(found, type) or not isinstance(getattr(found, "SCHEMA", None), dict):
        found = None
    if found is None or (base is not None and not issubclass(found, base)):
        raise ConfigError(f"{path}._target_={target!r} is not allowed: no such class (see {conf})")
    return found


def task_size(cfg: DictConfig) -> int:
    """The task's size the width ratio is taken against: p, or the group order for S5."""
    return part_class(cfg, "task").size_of(cfg.task)


def task_samples(cfg: DictConfig) -> int:
    """How many samples the task has (train and validation together), without building the data."""
    return part_class(cfg, "task").n_samples_of(cfg.task)


def apply_ratio(cfg: DictConfig) -> None:
    """With `model.ratio` set, d_model = ratio * task size rounded to a multiple of the head count (at least one)."""
    if cfg.model.get("ratio") is None:
        return
    Float(0, 1e6, lo_open=True).check("model.ratio", cfg.model.ratio)
    heads = cfg.model.get("n_heads", 1)
    Int(1, 1024).check("model.n_heads", heads)
    size = task_size(cfg)
    d_model = max(heads, round(cfg.model.ratio * size / heads) * heads)
    try:  # the derived width must fit the domain a width typed directly has
        part_class(cfg, "model").SCHEMA["d_model"].check("model.d_model", d_model)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (derived from model.ratio={cfg.model.ratio!r})") from None
    got = d_model / size
    if not cfg.model.ratio / RATIO_SLACK <= got <= cfg.model.ratio * RATIO_SLACK:
        raise ConfigError(
            f"model.ratio={cfg.model.ratio!r} is not allowed: at task size {size} with {heads} head(s) it gives "
            f"d_model {d_model}, ratio {got:.3g}, more than {RATIO_SLACK:g}x from it; the nearest widths are "
            f"multiples of {heads} (ratio steps of {heads / size:.3g}), or set model.d_model"
        )
    with open_dict(cfg):
        cfg.model.d_model = d_model


@dataclass(frozen=True)
class Machine:
    """What a run's resolution needs of the machine it trains on: the device type and the CPU's bf16 flags."""

    device: str  # cpu, cuda or mps
    cpu_flags: frozenset = frozenset()


@dataclass(frozen=True)
class Run:
    """One run, resolved once by `prepare`: its composed config (read-only) and every value derived from it."""

    cfg: DictConfig
    d_model: int | None  # the width trained (from model.ratio where that is set)
    task_size: int  # what the ratio divides by (the task's size: p for modular arithmetic)
    ratio: float | None  # d_model / task_size as trained
    budget: int  # train.max_epochs or train.max_steps
    unit: str  # what the loop counts: "epochs" or "steps"
    group: str | None  # the W&B group (logger.group; a sweep's cell: the sweep's group unless set)
    precision: str  # train.precision; `auto` until the machine is known, then fp32 or bf16
    engine: str  # train.engine; `auto` until the machine is known, then loop or packed
    pack_forward: str  # train.pack_forward; `auto` until the machine is known, then batched or vmap
    compile: str  # train.compile; `auto` until the machine is known, then always or never
    machine: Machine | None = None  # where it was resolved (None: checked where it is launched, not where it trains)
    coords: dict = field(default_factory=dict)  # a sweep cell's coordinates (swept keys but the seed), where planned


def budget(tc: DictConfig) -> tuple[int, str]:
    """The run's budget and the unit the loop counts in: (max_epochs, "epochs"), or (max_steps, "steps"), where one
    iteration of the loop is one optimizer step on a random batch, and every epoch-named count (eval_every, the
    checkpoints, metrics.csv's `epoch`, the W&B step, grok_epoch) is a step count."""
    steps = tc.get("max_steps")  # a config recorded before the key existed: epochs
    return (steps, "steps") if steps is not None else (tc.max_epochs, "epochs")


# train.precision=auto: bf16 autocast on a CPU with bf16 units, for models at least this wide (docs/benchmarks.md:
# on such a CPU bf16 ran seed 003's model 1.3x (d_model 32) to 2.7x (128) faster with grok epochs inside fp32's seed
# spread, and slower than fp32 at d_model 8, where the casts cost more than the matmuls save)
BF16_MIN_WIDTH = 32
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


def choose_precision(cfg: DictConfig, machine: Machine) -> str:
    """`train.precision`, with auto resolved: bf16 on a CPU with bf16 units (avx512_bf16 or amx_bf16 in its flags)
    for a model of d_model >= BF16_MIN_WIDTH, fp32 elsewhere (on GPUs bf16 has not been measured against fp32)."""
    precision = cfg.train.precision
    if precision != "auto":
        return precision
    wide = (cfg.model.get("d_model") or 0) >= BF16_MIN_WIDTH
    native = machine.device == "cpu" and bool(BF16_CPU_FLAGS & set(machine.cpu_flags))
    return "bf16" if wide and native else "fp32"


def choose_engine(cfg: DictConfig, machine: Machine | None) -> str:
    """How a single run's members are held: `loop` (the module itself) or `packed` (vmap over a pack of one, whose
    full-batch step a CUDA graph can hold). auto = packed on CUDA, loop elsewhere (`auto` while the machine is not
    known). A pack of several is packed."""
    if cfg.train.engine != "auto" or machine is None:
        return cfg.train.engine
    return "packed" if machine.device == "cuda" else "loop"


def choose_pack_forward(cfg: DictConfig, machine: Machine | None, model_class: type) -> str:
    """How a pack computes its members: `train.pack_forward`, with auto resolved where the machine is known: batched
    (the model's `forward_members`) on a CPU where the model has one (faster than vmap there, docs/benchmarks.md
    "Where a pack's time goes"), vmap elsewhere. ConfigError for batched on a model without one."""
    choice = cfg.train.pack_forward
    has = hasattr(model_class, "forward_members")
    if choice == "batched" and not has:
        raise ConfigError(
            f"train.pack_forward='batched' is not allowed: model {cfg.model.name!r} has no hand-batched forward "
            "(forward_members); use vmap or auto"
        )
    if choice != "auto" or machine is None:
        return choice
    return "batched" if has and machine.device == "cpu" else "vmap"


# train.compile=auto: a single CPU run is compiled where its budget is at least COMPILE_MIN_BUDGET epochs (or steps)
# and a compiled run of its work (samples x width, pack_work) was measured at least
# COMPILE_MIN_GAIN faster per epoch, read at the nearest measured work at or above the run's. Compiling costs about
# 35 s cold (an empty cache) and 5-6 s warm; at the measured points the warm compile repaid after 304 (p=97,
# d_model 32) to 5,177 epochs (p=23, 24), the cold one after 2,005 to 34,382 (scripts/bench_compile.py,
# docs/benchmarks.md "Compiling a run"). seed 003's transformer: (p, d_model, compiled speed over eager).
COMPILE_MEASURED: dict[str, list[tuple[int, int, float]]] = {
    "transformer": [(23, 24, 1.42), (97, 8, 1.46), (97, 32, 1.41), (97, 128, 0.98)],
}
COMPILE_MIN_BUDGET = 6000
COMPILE_MIN_GAIN = 1.1
COMPILERS = ("c++", "g++", "clang++")  # inductor's CPU code is C++: without one on PATH it cannot compile


def pack_work(samples: int, d_model: int) -> int:
    """A member's work per epoch as the rule compares it: the task's samples (all of them: the evaluation reads
    every one) times the width."""
    return samples * d_model


def measured_at(points: list[tuple], samples: int, d_model: int | None) -> tuple | None:
    """Of measured points (p, d_model, ...; p^2 samples each), the one of least work (pack_work) at or above a run's
    of `samples` samples at `d_model`; None where the width is unknown or every point's work is smaller."""
    if d_model is None:
        return None
    work = pack_work(samples, d_model)
    at_or_above = [pt for pt in points if pack_work(pt[0] * pt[0], pt[1]) >= work]
    return min(at_or_above, key=lambda pt: pack_work(pt[0] * pt[0], pt[1]), default=None)


def compile_pays(model: str, d_model: int | None, samples: int) -> bool:
    """Whether a compiled run of `model` at this width on `samples` samples was measured faster by COMPILE_MIN_GAIN,
    at the nearest measured work at or above its own (measured_at; an unmeasured model, or a larger work: no)."""
    at = measured_at(COMPILE_MEASURED.get(model, []), samples, d_model)
    return at is not None and at[2] >= COMPILE_MIN_GAIN


def choose_compile(cfg: DictConfig, machine: Machine | None, last: int) -> str:
    """`train.compile`, with auto resolved where the machine is known: always on a CPU with a C++ compiler when the
    budget (`last`) is at least COMPILE_MIN_BUDGET and compiling pays at the run's work (compile_pays), never
    elsewhere (GPUs and packs are not measured compiled)."""
    import shutil

    choice = cfg.train.compile
    if choice != "auto" or machine is None:
        return choice
    cpu = machine.device == "cpu" and any(shutil.which(c) for c in COMPILERS)
    pays = compile_pays(cfg.model.name, cfg.model.get("d_model"), task_samples(cfg))
    return "always" if cpu and pays and last >= COMPILE_MIN_BUDGET else "never"


def prepare(
    cfg: DictConfig,
    machine: Machine | Callable[[str], Machine] | None = None,
    sweep_dir: str | None = None,
    cell: tuple[list[str], set[str]] | None = None,
) -> Run:
    """Check every key, derive what the config implies and check across keys (ConfigError with one line), then
    resolve the run once and return it; the config is read-only afterwards. `machine`: where the run trains (or a
    function of train.device giving it, called once train's keys are checked); without it nothing depends on the
    machine (a sweep is checked where it is launched and trained elsewhere), and precision and engine stay `auto`.
    `sweep_dir`: the sweep a cell belongs to, whose W&B group it logs to unless logger.group is set; `cell`: its
    overrides and the sweep's swept keys, where the sweep is planned (the Run's coordinates). The device's memory is
    checked where the run trains (grokpipe.run.memory)."""
    OmegaConf.set_readonly(cfg, False)  # a config prepared before (a re-check, a pack's member) is resolved again
    for key in _secret_keys(cfg):
        raise ConfigError(
            f"{key} is not allowed: secrets come from the environment (e.g. WANDB_API_KEY), never from the config"
        )
    # train first: a part's key that interpolates one of train's (task.split_seed: ${train.seed}) is blamed on the
    # key the user wrote
    check_node(_plain(cfg, "train"), TRAIN_SCHEMA, "train")
    classes = {}
    for group in PARTS:
        if group not in cfg:
            raise ConfigError(f"{group} is missing: choose one of conf/{group}/")
        classes[group] = part_class(cfg, group)
        node = _plain(cfg, group)
        if group == "model" and node.get("ratio") is not None:
            node = {**node, "d_model": 1}  # derived below from the ratio
        check_node(node, classes[group].SCHEMA, group)
    from grokpipe.loggers import Logger

    check_node(_plain(cfg, "logger"), part_class(cfg, "logger", base=Logger).SCHEMA, "logger")
    measures = _plain(cfg, "measures")
    for key, node in measures.items():
        if not isinstance(node, dict):
            raise ConfigError(f"measures.{key}={node!r} is not allowed: must be a measure (see conf/measures/)")
        check_node(node, part_class(cfg.measures, key, f"measures.{key}").SCHEMA, f"measures.{key}")
    for key, reads in REQUIRED_MEASURES.items():
        if key not in measures or measures[key]["every"] != 1:
            raise ConfigError(f"measures.{key} is missing or not every evaluation: the stopping rule reads {reads}")

    check_budget(cfg.train)
    classes["task"].check(cfg.task)
    apply_ratio(cfg)
    m = cfg.model
    if "n_heads" in m and m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model={m.d_model!r} is not allowed: must be divisible by model.n_heads={m.n_heads}")
    if classes["loss"].output != classes["task"].output:
        raise ConfigError(
            f"loss={cfg.loss.name!r} is not allowed: it fits {classes['loss'].output} targets, "
            f"task {cfg.task.name!r} has {classes['task'].output} targets"
        )
    reads_out = getattr(classes["model"], "output", None)  # None: a model whose head fits any output kind
    if reads_out is not None and reads_out != classes["task"].output:
        raise ConfigError(
            f"model={cfg.model.name!r} is not allowed: it reads out {reads_out} outputs, "
            f"task {cfg.task.name!r} has {classes['task'].output} targets"
        )
    if callable(machine):
        machine = machine(cfg.train.device)
    last, unit = budget(cfg.train)
    with open_dict(cfg):
        if sweep_dir is not None and cfg.logger.get("group") is None:
            cfg.logger.group = sweep_group(str(sweep_dir))
        if machine is not None:  # resolved once, before the run record: a resume that resolves otherwise is refused
            cfg.train.precision = choose_precision(cfg, machine)
        cfg.train.pack_forward = choose_pack_forward(cfg, machine, classes["model"])
        cfg.train.compile = choose_compile(cfg, machine, last)
    size = task_size(cfg)
    d_model = cfg.model.get("d_model")
    coords = coordinates(cell[0], cell[1], cfg) if cell is not None else {}
    OmegaConf.set_readonly(cfg, True)
    return Run(
        cfg=cfg, d_model=d_model, task_size=size, ratio=None if d_model is None else d_model / size, budget=last,
        unit=unit, group=cfg.logger.get("group"), precision=cfg.train.precision, engine=choose_engine(cfg, machine),
        pack_forward=cfg.train.pack_forward, compile=cfg.train.compile, machine=machine, coords=coords,
    )  # fmt: skip


def check_budget(tc: DictConfig) -> None:
    """One budget: train.max_epochs, or train.max_steps with max_epochs null."""
    if tc.max_epochs is not None and tc.max_steps is not None:
        raise ConfigError(
            f"train.max_steps={tc.max_steps!r} is not allowed with train.max_epochs={tc.max_epochs!r}: one budget, "
            "in epochs or in steps (add train.max_epochs=null for a budget in steps)"
        )
    if tc.max_epochs is None and tc.max_steps is None:
        raise ConfigError(
            "train.max_epochs=None is not allowed: a run needs a budget, train.max_epochs or train.max_steps "
            "(an integer >= 1)"
        )


def _secret_keys(node, prefix: str = ""):
    for key, value in node.items_ex(resolve=False):
        path = f"{prefix}{key}"
        if path == "hydra":  # Hydra's own settings, not the run's
            continue
        if SECRET_KEY.search(str(key)):
            yield path
        if isinstance(value, DictConfig):
            yield from _secret_keys(value, path + ".")
