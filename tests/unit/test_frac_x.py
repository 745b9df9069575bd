"""Seed 004's parts: the fraction-of-x task (its data, split, metric and criterion), the causal transformer (causal,
in (0, 1), initialised as the notebook's model), the MSE loss, the seed004 preset, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_cfg
from torch import nn

from grokpipe.config.validate import prepare
from grokpipe.core.errors import ConfigError
from grokpipe.losses import build_loss
from grokpipe.measures import build_measures
from grokpipe.models import build_model
from grokpipe.run.stack import make_stack
from grokpipe.tasks import build_task
from grokpipe.tasks.frac_x import LETTERS, X

REAL = ["task=frac_x", "model=causal_transformer", "loss=mse"]


def frac_x(*overrides: str):
    return build_task(compose_cfg([*REAL, *overrides]).task)


def test_targets_are_the_running_fraction_of_x():
    task = frac_x("task.n_samples=500")
    x, y = task.samples()
    assert x.shape == y.shape == (500, 10) and x.dtype == torch.long and y.dtype == torch.float32
    assert task.spec.vocab_size == len(LETTERS) == task.size == 26 and LETTERS[X] == "x"
    assert int(x.min()) >= 0 and int(x.max()) < 26
    counts = (x == X).sum(1)
    assert set(counts.tolist()) == set(range(6))  # 0 to seq_len / 2 x's, each count drawn
    for seq, target in zip(x.tolist()[:50], y.tolist()[:50]):
        seen = 0
        for i, token in enumerate(seq):
            seen += token == X
            assert target[i] == pytest.approx(seen / (i + 1))
    other = x[x != X]
    assert set(other.unique().tolist()) == set(range(26)) - {X}  # every other letter, x never among them
    again, _ = frac_x("task.n_samples=500").samples()
    other_seed, _ = frac_x("task.n_samples=500", "task.data_seed=1").samples()
    assert torch.equal(x, again) and not torch.equal(x, other_seed)


def test_split_is_train_frac_of_the_draw_and_its_seed_only_splits():
    a, b = frac_x("task.split_seed=3").split(), frac_x("task.split_seed=4").split()
    assert len(a.train_y) == 600 and len(a.val_y) == 1400  # seed 004: 30% of 2000
    assert not torch.equal(a.train_x, b.train_x)
    assert torch.equal(torch.cat([a.train_x, a.val_x]).sort(0).values, torch.cat([b.train_x, b.val_x]).sort(0).values)


def test_mae_and_the_criterion_read_at_or_below():
    task = frac_x()
    y = torch.rand(2, 5, 10)
    out = y + torch.tensor([0.01, 0.1]).view(2, 1, 1)
    assert task.metrics(out, y)["mae"] == pytest.approx(torch.tensor([0.01, 0.1]), abs=1e-6)
    row = {"train_mae": torch.tensor([0.01, 0.1]), "val_mae": torch.tensor([0.02, 0.019])}
    assert task.criterion(row, "memorize").tolist() == [True, False]
    assert task.criterion(row, "generalize").tolist() == [True, True]
    assert task.criterion_text() == "generalised: val_mae <= 0.02; memorised: train_mae <= 0.02"


def test_mse_is_the_mean_over_samples_and_positions_per_member():
    loss = build_loss(compose_cfg(REAL).loss)
    out, y = torch.rand(3, 7, 10), torch.rand(3, 7, 10)
    expected = torch.stack([F.mse_loss(out[m], y[m]) for m in range(3)])
    assert loss(out, y) == pytest.approx(expected, abs=1e-7)


def test_causal_transformer_reads_out_a_fraction_per_position_from_the_past_only():
    cfg = compose_cfg(REAL)
    task = build_task(cfg.task)
    torch.manual_seed(0)
    model = build_model(cfg.model, task.spec)
    x, _ = task.samples()
    x = x[:8].clone()
    out = model(x)
    assert out.shape == (8, 10) and bool(((out > 0) & (out < 1)).all())
    changed = x.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 26
    after = model(changed)
    assert torch.allclose(after[:, :6], out[:, :6], atol=1e-6)  # positions before 6 never see it
    assert not torch.allclose(after[:, 6:], out[:, 6:])
    assert model.features(x).shape == (8, 10, 64)
    assert sum(p.numel() for p in model.parameters()) == 48673


class NotebookModel(nn.Module):
    """Seed 004's `MLP` class as the notebook writes it (dropout 0: grokpipe's model has none)."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(26, 64)
        self.pos_encoding = nn.Embedding(10, 64)
        self.transformer_layers = nn.ModuleList(
            [nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=48, dropout=0.0, batch_first=True)
             for _ in range(2)]
        )  # fmt: skip
        self.output = nn.Linear(64, 1)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p, gain=2.0)

    def forward(self, x):  # the notebook's, line for line
        batch_size, seq_len = x.shape
        token_embeds = self.embedding(x)
        positions = torch.arange(seq_len, device=x.device).unsqueeze(0).expand(batch_size, -1)
        pos_embeds = self.pos_encoding(positions)
        x = token_embeds + pos_embeds
        causal_mask = torch.triu(torch.ones(seq_len, seq_len), diagonal=1).bool().to(x.device)
        for transformer_layer in self.transformer_layers:
            x = transformer_layer(x, src_mask=causal_mask)
        x = self.output(x).squeeze(-1)
        return torch.sigmoid(x)


def test_causal_transformer_starts_from_the_notebooks_weights():
    cfg = compose_cfg(REAL)
    torch.manual_seed(4)
    ours = build_model(cfg.model, build_task(cfg.task).spec).state_dict()
    torch.manual_seed(4)
    theirs = NotebookModel().state_dict()
    rename = {"embedding": "tok", "pos_encoding": "pos", "transformer_layers": "layers", "output": "head"}
    theirs = {rename[k.split(".")[0]] + k[len(k.split(".")[0]) :]: v for k, v in theirs.items()}
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def test_causal_transformer_computes_the_notebooks_function():
    """The same weights in both (loaded into the notebook's model from ours): the same outputs on the same letters,
    before and after the weights move away from their initialisation."""
    cfg = compose_cfg(REAL)
    task = build_task(cfg.task)
    torch.manual_seed(4)
    ours = build_model(cfg.model, task.spec).eval()
    theirs = NotebookModel().eval()
    rename = {"tok": "embedding", "pos": "pos_encoding", "layers": "transformer_layers", "head": "output"}
    x = task.split().train_x[:64]
    for _ in range(2):
        state = {rename[k.split(".")[0]] + k[len(k.split(".")[0]) :]: v for k, v in ours.state_dict().items()}
        theirs.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
            for p in ours.parameters():  # other weights than the initial ones: every path of the function counts
                p.add_(0.05 * torch.randn_like(p))


def test_seed004_preset_is_the_notebooks_setting():
    cfg = compose_cfg(["sweep=seed004"])
    prepare(cfg)
    t, m, o, tr = cfg.task, cfg.model, cfg.optim, cfg.train
    assert (t.name, t.seq_len, t.n_samples, t.train_frac) == ("frac_x", 10, 2000, 0.3)
    assert (m.name, m.d_model, m.n_layers, m.n_heads, m.hidden_size, m.init_gain) == (
        "causal_transformer", 64, 2, 4, 48, 2.0
    )  # fmt: skip
    assert (cfg.loss.name, o.name, o.lr, o.wd, list(o.betas), o.warmup_steps) == (
        "mse",
        "adam",
        0.01,
        0.1,
        [0.9, 0.999],
        0,
    )
    assert (tr.max_epochs, tr.max_steps, tr.batch_size, tr.patience) == (None, 50000, 256, None)
    assert tr.max_steps // tr.checkpoint_every == 100 and tr.eval_every == tr.checkpoint_every
    assert cfg.model.d_model / build_task(t).size == pytest.approx(64 / 26)  # the width ratio


def test_the_modular_measures_say_why_they_do_not_apply():
    cfg = compose_cfg(REAL)
    task = build_task(cfg.task)
    torch.manual_seed(0)
    stack = make_stack([build_model(cfg.model, task.spec)], vmap=False)
    why = {m.name: m.applies(stack) for m in build_measures(cfg.measures, task)}
    assert why["fourier"] == "task frac_x has no residue tokens to take a Fourier transform over"
    assert why["restricted_loss"] == "defined for (a + b) mod p and (a - b) mod p, not task frac_x"
    assert why["softmax_collapse"] == "task frac_x has no class logits"
    assert all(why[m] is None for m in ("loss", "task_metrics", "weight_norm", "lr", "effective_rank"))


@pytest.mark.parametrize(
    "overrides,line",
    [
        (["task.seq_len=1"], "task.seq_len=1 is not allowed: must be an integer in 2..128"),
        (["task.generalize_at=1.0"], "task.generalize_at=1.0 is not allowed: must be a finite number in (0, 1)"),
        (["task.memorize_at=0"], "task.memorize_at=0 is not allowed: must be a finite number in (0, 1)"),
        (
            ["task.n_samples=2", "task.train_frac=0.2"],
            "task.train_frac=0.2 is not allowed: must leave at least one sample in train and in val (2 samples)",
        ),
        (
            ["train.max_steps=50000"],
            "train.max_steps=50000 is not allowed with train.max_epochs=20000: one budget, in epochs or in steps "
            "(add train.max_epochs=null for a budget in steps)",
        ),
        (["train.max_epochs=null"], "train.max_epochs=None is not allowed: a run needs a budget"),
        (["train.max_epochs=null", "train.max_steps=0"], "train.max_steps=0 is not allowed: must be an integer in"),
        (
            ["loss=cross_entropy"],
            "loss='cross_entropy' is not allowed: it fits classes targets, task 'frac_x' has real",
        ),
        (
            ["task=mod_add", "loss=cross_entropy"],
            "model='causal_transformer' is not allowed: it reads out real outputs",
        ),
        (["model=tied_mlp"], "model='tied_mlp' is not allowed: it reads out classes outputs, task 'frac_x' has real"),
    ],
)
def test_bad_input_is_refused_in_one_line(overrides, line):
    with pytest.raises(ConfigError) as info:
        prepare(compose_cfg([*REAL, *overrides]))
    assert str(info.value).startswith(line) and "\n" not in str(info.value)
