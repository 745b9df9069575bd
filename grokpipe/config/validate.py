"""Every check on a composed config, run before anything heavy. An error names the key, the value, what is allowed.

Each group's keys are checked against the schema of the part its `_target_` names (grokpipe.core.schema), the logger's
too; `train` has its schema here. Then the checks across keys, then the estimate of the memory the run needs.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

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


def prepare(cfg: DictConfig) -> None:
    """Check every key, derive what the config implies (d_model from model.ratio) and check across keys; raises
    ConfigError with one line. Nothing here depends on the machine (a sweep is checked where it is launched, and
    trained elsewhere): the device and its memory are checked where the run trains (`check_memory`)."""
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
