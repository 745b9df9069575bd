"""Every check on a composed config, run before anything heavy. An error names the key, the value, what is allowed."""

from __future__ import annotations

from omegaconf import DictConfig, open_dict

from grokpipe.errors import ConfigError
from grokpipe.tasks import OPS

MODELS = ("transformer", "nanda", "mlp", "tied_mlp")
OPTIMIZERS = ("adamw", "adam", "sgd")
ENGINES = ("auto", "loop", "packed")
DEVICES = ("auto", "cpu", "cuda", "mps")
LOGGERS = ("wandb", "none")


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _number(cfg: DictConfig, key: str):
    value = cfg
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} is not allowed: must be a number")
    return value


def _int(cfg: DictConfig, key: str) -> int:
    value = _number(cfg, key)
    _require(isinstance(value, int), key, value, "must be an integer")
    return value


def _secret_keys(node, prefix: str = ""):
    from grokpipe.wandb_log import SECRET_KEY

    for key, value in node.items_ex(resolve=False):
        path = f"{prefix}{key}"
        if path == "hydra":  # Hydra's own settings, not the run's
            continue
        if SECRET_KEY.search(str(key)):
            yield path
        if isinstance(value, DictConfig):
            yield from _secret_keys(value, path + ".")


def task_size(cfg: DictConfig) -> int:
    """Number of classes: p for the modular ops, 120 for S5."""
    return 120 if cfg.task.op == "s5" else cfg.task.p


def apply_ratio(cfg: DictConfig) -> None:
    """With `model.ratio` set, d_model = ratio * p rounded to a multiple of the head count (at least one)."""
    if cfg.model.get("ratio") is None:
        return
    r = _number(cfg, "model.ratio")
    _require(r > 0, "model.ratio", r, "must be > 0 (or null to use model.d_model)")
    if cfg.task.op != "s5":
        _int(cfg, "task.p")
    step = _int(cfg, "model.n_heads") if "n_heads" in cfg.model else 1
    _require(step > 0, "model.n_heads", step, "must be a positive integer")
    with open_dict(cfg):
        cfg.model.d_model = max(step, round(r * task_size(cfg) / step) * step)


def prepare(cfg: DictConfig) -> None:
    """Derive what the config implies (d_model from model.ratio), then validate; raises ConfigError."""
    apply_ratio(cfg)
    validate(cfg)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that cannot make a run."""
    for key in _secret_keys(cfg):
        raise ConfigError(
            f"{key} is not allowed: secrets come from the environment (e.g. WANDB_API_KEY), never from the config"
        )
    t, m, o, tr = cfg.task, cfg.model, cfg.optim, cfg.train
    _require(t.op in OPS, "task.op", t.op, f"one of {', '.join(OPS)}")
    if t.op != "s5":
        p = _int(cfg, "task.p")
        _require(is_prime(p), "task.p", p, "must be a prime (e.g. 23, 47, 59, 97, 113)")
    frac = _number(cfg, "task.train_frac")
    _require(0 < frac < 1, "task.train_frac", frac, "must lie strictly between 0 and 1")
    n_pairs = 120 * 120 if t.op == "s5" else t.p * (t.p - 1 if t.op == "div" else t.p)
    _require(
        1 <= round(frac * n_pairs) < n_pairs,
        "task.train_frac",
        frac,
        f"must leave at least one pair in train and in val ({n_pairs} pairs at p={t.p})",
    )
    _int(cfg, "task.split_seed")

    _require(m.name in MODELS, "model.name", m.name, f"one of {', '.join(MODELS)}")
    d = _int(cfg, "model.d_model")
    _require(d > 0, "model.d_model", d, "must be a positive integer")
    if "n_heads" in m:
        heads = _int(cfg, "model.n_heads")
        _require(heads > 0, "model.n_heads", heads, "must be a positive integer")
        _require(d % heads == 0, "model.d_model", d, f"must be divisible by model.n_heads={heads}")
        layers = _int(cfg, "model.n_layers")
        _require(layers > 0, "model.n_layers", layers, "must be a positive integer")
    if "hidden" in m:
        _require(_int(cfg, "model.hidden") > 0, "model.hidden", m.hidden, "must be a positive integer")

    _require(o.name in OPTIMIZERS, "optim.name", o.name, f"one of {', '.join(OPTIMIZERS)}")
    lr = _number(cfg, "optim.lr")
    _require(lr > 0, "optim.lr", lr, "must be > 0")
    wd = _number(cfg, "optim.wd")
    _require(wd >= 0, "optim.wd", wd, "must be >= 0")
    _require(_int(cfg, "optim.warmup_steps") >= 0, "optim.warmup_steps", o.warmup_steps, "must be >= 0")
    if o.grokfast.enabled:
        alpha = _number(cfg, "optim.grokfast.alpha")
        _require(0 <= alpha < 1, "optim.grokfast.alpha", alpha, "must lie in [0, 1)")

    epochs = _int(cfg, "train.max_epochs")
    _require(epochs > 0, "train.max_epochs", epochs, "must be a positive integer")
    ev = _int(cfg, "train.eval_every")
    _require(ev > 0, "train.eval_every", ev, "must be a positive integer")
    if tr.batch_size is not None:
        _require(_int(cfg, "train.batch_size") > 0, "train.batch_size", tr.batch_size, "a positive integer or null")
    if tr.patience is not None:
        _require(_int(cfg, "train.patience") >= 0, "train.patience", tr.patience, "an integer >= 0 or null")
    for key in ("latest_every", "checkpoint_every", "print_every"):
        _require(_int(cfg, f"train.{key}") >= 0, f"train.{key}", tr[key], "must be an integer >= 0")
    _require(tr.precision in ("fp32", "bf16"), "train.precision", tr.precision, "one of fp32, bf16")
    _require(tr.engine in ENGINES, "train.engine", tr.engine, f"one of {', '.join(ENGINES)}")
    sync = _int(cfg, "train.sync_every")
    _require(sync > 0, "train.sync_every", sync, "must be a positive integer")
    _require(isinstance(tr.cuda_graph, bool), "train.cuda_graph", tr.cuda_graph, "must be true or false")
    _require(tr.device in DEVICES, "train.device", tr.device, f"one of {', '.join(DEVICES)}")
    _require(cfg.logger.name in LOGGERS, "logger.name", cfg.logger.name, f"one of {', '.join(LOGGERS)}")
