"""The members of a run as one stack: every member's parameters are one row of a flat [M, P] tensor.

`ModuleStack` holds one member as an ordinary module whose parameters are views into the [1, P] row (and whose
gradients accumulate into a [1, P] buffer): a single run on the CPU, at the module's own speed. `VmapStack` holds
M members as one functional model, `torch.vmap` over `torch.func.functional_call`: a pack, or a single run on CUDA,
where the step can be captured in a CUDA graph (`GraphedStep`). With `train.pack_forward=batched` (auto's choice on
a CPU) a pack of a model that has `forward_members(params, x)` (the built-in transformer and MLP) is computed by it
instead of vmap: the same function, hand-batched over the member axis (one batched matmul per linear map, one call
per element-wise op for the whole pack). Both give the optimiser the same `flat` and `grad`, and both export and
import a member as the module's plain state_dict, so a checkpoint is the same either way; the two round differently
(equal in float64 to rounding), so a pack re-runs bit for bit with the forward it was made with.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn.attention import SDPBackend, sdpa_kernel


@dataclass(frozen=True)
class Slot:
    """Where one parameter tensor lives in a member's row of `flat`: columns [start, start + numel)."""

    name: str
    shape: tuple[int, ...]
    start: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def layout_of(model: nn.Module) -> list[Slot]:
    """The module's parameters as slots of its flat row, in `parameters()` order."""
    slots, start = [], 0
    for name, p in model.named_parameters():
        slots.append(Slot(name, tuple(p.shape), start))
        start += p.numel()
    return slots


class ModuleStack:
    def __init__(self, model: nn.Module) -> None:
        self.model, self.m = model, 1
        self.layout = layout_of(model)
        params = list(model.parameters())
        self.flat = torch.cat([p.detach().reshape(-1) for p in params]).unsqueeze(0)
        self._grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:  # the parameters become views: the optimiser's in-place update of `flat` is the update
            n = p.numel()
            p.data = self.flat[0, offset : offset + n].view_as(p)
            p.grad = self._grad[0, offset : offset + n].view_as(p)  # backward accumulates in place into these
            offset += n

    @property
    def grad(self) -> torch.Tensor:
        return self._grad

    def zero_grad(self) -> None:
        self._grad.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [1, N, ...] of the member on x [1, N, seq_len]."""
        return self.model(x[0]).unsqueeze(0)

    def param(self, name: str) -> torch.Tensor:
        """Parameter `name` of every member, [M, *shape] (a view of `flat`)."""
        return self.model.get_parameter(name).detach().unsqueeze(0)

    def member_state(self, i: int) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_member(self, i: int, state: dict) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(state[name])


class VmapStack:
    def __init__(self, models: list[nn.Module], batched: bool = False) -> None:
        ref = models[0]
        self.m = len(models)
        self.layout = layout_of(ref)
        self.names = [n for n, _ in ref.named_parameters()]
        self.shapes = [p.shape for _, p in ref.named_parameters()]
        self.sizes = [p.numel() for _, p in ref.named_parameters()]
        self.template = {k: v.detach().clone() for k, v in ref.state_dict().items()}
        self.base = copy.deepcopy(ref).to("meta")
        _, self.buffers = stack_module_state(models)
        rows = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models]
        self.flat = torch.stack(rows).requires_grad_(True)
        self.batched = batched and hasattr(ref, "forward_members") and not self.buffers

    @property
    def grad(self) -> torch.Tensor:
        return self.flat.grad

    def zero_grad(self) -> None:
        self.flat.grad = None

    def params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        chunks = flat.split(self.sizes, dim=1)
        return {n: c.view(self.m, *s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [M, N, ...] of every member on its own inputs x [M, N, seq_len]."""
        if self.batched:
            return self.base.forward_members(self.params(self.flat), x)
        # the math attention kernel: it batches under vmap (the CPU flash kernel has no batching rule), and at a
        # few tokens the fused kernels save nothing
        with sdpa_kernel(SDPBackend.MATH):
            return torch.vmap(self._call, randomness="different")(self.params(self.flat), self.buffers, x)

    def param(self, name: str) -> torch.Tensor:
        """Parameter `name` of every member, [M, *shape] (a view of `flat`)."""
        return self.params(self.flat.detach())[name]

    def member_state(self, i: int) -> dict:
        params = self.params(self.flat.detach())
        state = {k: v.clone() for k, v in self.template.items()}
        state.update({n: params[n][i].clone() for n in self.names})
        return state

    def load_member(self, i: int, state: dict) -> None:
        with torch.no_grad():
            self.flat[i] = torch.cat([state[n].reshape(-1).to(self.flat) for n in self.names])


def make_stack(models: list[nn.Module], vmap: bool, forward: str = "vmap") -> ModuleStack | VmapStack:
    """The module itself for a single run (vmap False), else a VmapStack computing its members by `forward`
    (train.pack_forward as resolved: batched or vmap)."""
    if len(models) == 1 and not vmap:
        return ModuleStack(models[0])
    return VmapStack(models, batched=forward == "batched")


class GraphedStep:
    """A training step, captured once in a CUDA graph and replayed every epoch after (CUDA only).

    PyTorch's whole-network capture: `warmup` ordinary steps run on a side stream (they are real epochs), the
    gradient is reset once, then forward, backward and the optimiser update are captured and replayed as one
    launch. Every tensor the step reads or writes keeps its storage, so a replay is the eager step. If capture
    fails the step stays eager, with one warning. Anywhere else it is the eager step.
    """

    def __init__(self, zero_grad, body, enabled: bool) -> None:
        self.zero_grad, self.body = zero_grad, body  # body: forward, backward, update
        self.warmup, self.graph, self.eager = 3, None, not enabled

    def step(self) -> None:
        self.zero_grad()
        self.body()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.eager:
            self.step()
        elif self.warmup > 0:
            self.warmup -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self._capture()

    def _capture(self) -> None:
        self.zero_grad()  # backward inside the graph then writes a fresh gradient each replay, never accumulates
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # records; nothing runs until replay
                self.body()
        except Exception as exc:  # noqa: BLE001 - an eager step is always correct
            print(f"warning: CUDA graph capture failed ({type(exc).__name__}: {exc}); training eagerly", flush=True)
            self.eager = True
            self.step()
            return
        self.graph = graph
        graph.replay()
