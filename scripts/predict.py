"""Ask a trained run one question: `python scripts/predict.py RUN_DIR A B`.

Loads RUN_DIR/.hydra/config.yaml and RUN_DIR/checkpoints/last.pt and prints e.g.
`(45 + 30) mod 97: model says 75 (confidence 0.998), true answer 75 ✓ (held-out pair)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokpipe.core.errors import fail

FORMULAS = {
    "add": "({a} + {b})",
    "sub": "({a} - {b})",
    "mul": "({a} * {b})",
    "div": "({a} / {b})",
    "x2_y2": "({a}^2 + {b}^2)",
    "x2_xy_y2": "({a}^2 + {a}*{b} + {b}^2)",
    "x2_xy_y2_x": "({a}^2 + {a}*{b} + {b}^2 + {a})",
    "x3_xy": "({a}^3 + {a}*{b})",
    "x3_xy2_y": "({a}^3 + {a}*{b}^2 + {b})",
}


def question(op: str, p: int, a: int, b: int) -> str:
    if op == "s5":
        return f"({a} ∘ {b}) in S5"
    return f"{FORMULAS[op].format(a=a, b=b)} mod {p}"


def _operand(name: str, text: str, n: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        fail(f"{name}={text!r} is not allowed: must be an integer in 0..{n - 1} for {what}")
    if not 0 <= value < n:
        fail(f"{name}={value} is not allowed: must be an integer in 0..{n - 1} for {what}")
    return value


def predict(run_dir: Path, a_text: str, b_text: str) -> str:
    """The answer line for (a, b), or a one-line error (SystemExit 2) for a bad run dir or operand."""
    if not run_dir.is_dir():
        fail(f"{run_dir}: no such run dir")
    config, last = run_dir / ".hydra" / "config.yaml", run_dir / "checkpoints" / "last.pt"
    if not config.is_file():
        fail(f"{run_dir}: no .hydra/config.yaml (not a grokpipe run dir)")

    import torch
    from omegaconf import OmegaConf

    from grokpipe.config.validate import apply_ratio, task_size
    from grokpipe.core.checkpoint import load_checkpoint
    from grokpipe.core.errors import ConfigError
    from grokpipe.models import build_model
    from grokpipe.tasks import build_task

    cfg = OmegaConf.load(config)
    try:
        apply_ratio(cfg)  # d_model as the run derived it from model.ratio
    except ConfigError as exc:
        fail(f"{config}: {exc}")
    op, p = cfg.task.get("op", cfg.task.name), cfg.task.get("p")
    n = task_size(cfg)
    what = question(op, p, "a", "b") + (" (indices of the 120 permutations)" if op == "s5" else "")
    a = _operand("A", a_text, n, what)
    b = _operand("B", b_text, n, what)
    if op == "div" and b == 0:
        fail(f"B=0 is not allowed: {question(op, p, a, b)} divides by zero, which has no answer")
    if not last.is_file():
        fail(f"{run_dir}: no checkpoints/last.pt (the run failed or has not reached its first checkpoint)")

    task = build_task(cfg.task)
    xs, ys, labels = task.pairs()
    (where,) = ((xs == a) & (ys == b)).nonzero(as_tuple=True)
    truth = int(labels[where[0]])
    x = task.encode(torch.tensor([a]), torch.tensor([b]))
    in_train = bool((task.split().train_x == x).all(dim=1).any())

    model = build_model(cfg.model, task.spec)
    try:
        model.load_state_dict(load_checkpoint(last)["model"])
    except Exception as exc:  # a torn file or a checkpoint of another model
        fail(f"{last}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), dim=-1)[0]
    guess = int(probs.argmax())
    mark = "✓" if guess == truth else "✗"
    split = "training pair" if in_train else "held-out pair"
    return (
        f"{question(op, p, a, b)}: model says {guess} (confidence {float(probs[guess]):.3f}), "
        f"true answer {truth} {mark} ({split})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.error = fail  # one line, like every other grokpipe error
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("a", metavar="A")
    parser.add_argument("b", metavar="B")
    args = parser.parse_args(argv)
    print(predict(args.run_dir, args.a, args.b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
