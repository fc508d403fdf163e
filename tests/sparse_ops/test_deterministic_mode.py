"""Every op runs under ``torch.use_deterministic_algorithms(True)`` on the CPU (forward and backward, both
backends, channels-last inputs, the max pool, the soft ops and the loss) and repeats bit for bit there.

PyTorch raises for some nondeterministic kernels even on the CPU (``nn.MaxUnpool2d`` does): a new kernel of
that kind in an op fails here. The CUDA side is documented on the uniformization page (not run here).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import sparse_ops as so
from tests.sparse_ops.test_threads import ASSOC, CASES, CELL, LABELS, X


def _twice(op: Callable[..., Tensor], inputs: tuple[Tensor, ...], channels_last: bool) -> list[list[Tensor]]:
    runs = []
    for _ in range(2):
        leaves = [
            (t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t.clone())
            .detach()
            .requires_grad_()
            for t in inputs
        ]
        out = op(*leaves)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        runs.append([out.detach(), *(t.grad for t in leaves if t.grad is not None)])
    return runs


@pytest.fixture
def deterministic():
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


LOSS_CASES = [
    ("spixel-loss-labels", lambda a: so.spixel_loss(a, LABELS, CELL).total, (ASSOC,)),
    ("spixel-loss-features", lambda a: so.spixel_loss(a, X[:, :3], CELL).total, (ASSOC,)),
]
ALL = [*CASES, *LOSS_CASES]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("name", "op", "inputs"), ALL, ids=[c[0] for c in ALL])
def test_runs_and_repeats_in_deterministic_mode_on_the_cpu(
    deterministic: None, name: str, op: Callable[..., Tensor], inputs: tuple[Tensor, ...], channels_last: bool
) -> None:
    first, second = _twice(op, inputs, channels_last)
    assert len(first) == 1 + len(inputs), f"{name}: an input got no gradient"
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b), name
