"""A run's end as a person reads it (grokpipe.run.report): the outcome first, then what moved, time, the files."""

from __future__ import annotations

from grokpipe.run.report import describe

BASE = {"model": "mlp", "d_model": 64, "task": "mod_add", "p": 59, "ratio": 64 / 59, "optimizer": "adamw",
        "lr": 0.01, "wd": 1.0, "seed": 0, "unit": "epochs", "wall_seconds": 75.2,
        "criterion": "generalised: val_acc >= 0.95; memorised: train_acc >= 0.99"}  # fmt: skip


def test_a_grokked_run_says_when_what_moved_before_and_where_its_files_are(tmp_path):
    (tmp_path / "curves.png").write_bytes(b"png")
    (tmp_path / "wandb" / "offline-run-1").mkdir(parents=True)
    summary = {**BASE, "status": "grokked", "grokked": True, "grok_epoch": 520, "memorized_epoch": 40,
               "epochs_run": 610, "crossed": {"fourier_gini": 480, "sc_share": None},
               "hidden_progress": {"fourier_gini": 40, "sc_share": None}}  # fmt: skip
    lines = describe(summary, tmp_path).splitlines()
    assert lines[0].startswith("grokked at epoch 520; memorised at epoch 40")
    assert lines[1] == "progress measures crossed: fourier_gini at 480 (40 before the grok); not crossed: sc_share"
    assert lines[2].startswith("trained 610 epochs in 1m15s: mlp d_model 64 on mod_add p=59 (ratio 1.08)")
    assert lines[3] == f"run dir: {tmp_path}   figure: {tmp_path / 'curves.png'}"
    assert f"wandb sync {tmp_path / 'wandb' / 'offline-run-1'}" in lines[4]
    assert lines[-1].startswith(f"full record: {tmp_path / 'summary.json'}") and len(lines) == 6


def test_a_run_that_did_not_grok_or_diverged_says_so_first(tmp_path):
    done = {**BASE, "status": "completed", "grokked": False, "grok_epoch": None, "memorized_epoch": 430,
            "epochs_run": 1000, "final_val_acc": 0.0755, "final_val_loss": 4.8}  # fmt: skip
    first = describe(done, tmp_path).splitlines()[0]
    assert first == "did not grok in 1000 epochs (val acc 0.0755); memorised at epoch 430"
    diverged = {**done, "status": "diverged", "epochs_run": 40, "memorized_epoch": None}
    first = describe(diverged, tmp_path).splitlines()[0]
    assert first == "diverged at epoch 40 (a non-finite train loss); never memorised"
    assert "figure" not in describe(done, tmp_path) and "W&B" not in describe(done, tmp_path)
