"""The seed 003 transformer written by hand is torch's pre-LN encoder: same weights from a seed, same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from grokpipe.models import operands
from grokpipe.models.transformer import GrokTransformer
from grokpipe.tasks import TaskSpec


class TorchLayers(nn.Module):
    """The model as it was built on nn.TransformerEncoderLayer: the reference for the hand-written blocks."""

    def __init__(self, spec: TaskSpec, d_model: int, n_layers: int, n_heads: int, ff_mult: int):
        super().__init__()
        self.n_in = operands(spec)
        self.tok = nn.Embedding(spec.vocab_size, d_model)
        self.pos = nn.Embedding(self.n_in, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ff_mult * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, spec.n_outputs)

    def forward(self, x):
        h = self.tok(x[:, : self.n_in]) + self.pos.weight
        return self.head(self.norm(self.blocks(h)).mean(dim=1))


def spec(vocab: int, seq_len: int) -> TaskSpec:
    return TaskSpec(vocab_size=vocab, seq_len=seq_len, n_outputs=vocab, query_token=False)


@pytest.mark.parametrize(
    "vocab, seq_len, n, d_model, n_heads",
    [(11, 2, 40, 16, 4), (11, 2, 5, 16, 4), (7, 3, 30, 12, 3), (13, 2, 60, 32, 1)],
    ids=["2 tokens, table", "2 tokens, fewer samples than tokens", "3 tokens, softmax", "one head"],
)
def test_same_weights_outputs_and_gradients_as_torchs_encoder(vocab, seq_len, n, d_model, n_heads):
    s = spec(vocab, seq_len)
    torch.manual_seed(3)
    ours = GrokTransformer(s, d_model, n_layers=2, n_heads=n_heads, ff_mult=4).double()
    torch.manual_seed(3)
    theirs = TorchLayers(s, d_model, 2, n_heads, 4).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    # trained a few steps apart from the initial point, so the layers' weights differ from one another
    opt = torch.optim.SGD(theirs.parameters(), lr=0.5)
    x = torch.randint(0, vocab, (n, seq_len), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(theirs(x), y).backward()
        opt.step()
    ours.load_state_dict(theirs.state_dict())
    theirs.zero_grad()
    out_theirs, out_ours = theirs(x), ours(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-10, atol=1e-10)
    nn.functional.cross_entropy(out_theirs, y).backward()
    nn.functional.cross_entropy(out_ours, y).backward()
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("model", ["transformer", "mlp"])
@pytest.mark.parametrize("vocab, seq_len, n", [(11, 2, 40), (11, 2, 5), (7, 3, 30)])
def test_the_hand_batched_pack_equals_vmap(model, vocab, seq_len, n):
    """A CPU pack's forward_members: outputs and gradients of the flat [M, P] row equal vmap's to rounding (float64;
    the LayerNorms' affine is folded into the next linear map); the packed integration tests hold members to their
    single runs."""
    from grokpipe.models.mlp import MLP
    from grokpipe.run.stack import VmapStack

    s = spec(vocab, seq_len)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        built = GrokTransformer(s, 12, n_layers=2, n_heads=3, ff_mult=4) if model == "transformer" else MLP(s, 12, 20)
        models.append(built.double())
    vmapped, batched = VmapStack(models, batched=False), VmapStack(models, batched=True)
    assert batched.batched and not vmapped.batched
    x = torch.randint(0, vocab, (3, n, seq_len), generator=torch.Generator().manual_seed(0))
    out_v, out_b = vmapped.forward(x), batched.forward(x)
    torch.testing.assert_close(out_b, out_v, atol=1e-10, rtol=0)
    out_v.pow(2).sum().backward()
    out_b.pow(2).sum().backward()
    torch.testing.assert_close(batched.grad, vmapped.grad, atol=1e-10, rtol=0)
    for i, m in enumerate(models):  # and each member is its module
        torch.testing.assert_close(out_b[i], m(x[i]), atol=1e-10, rtol=0)
