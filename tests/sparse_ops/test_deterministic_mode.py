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
from tests.sparse_ops.test_threads import ASSOC, CASES, CELL, LABELS, X, _run


def _twice(op: Callable[..., Tensor], inputs: tuple[Tensor, ...], channels_last: bool) -> list[list[Tensor]]:
    """The output and the input gradients of two runs (test_threads' run, with the current thread count)."""
    return [_run(op, inputs, torch.get_num_threads(), channels_last) for _ in range(2)]


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
    first, second = _twice(op, inputs, channels_last)  # _run: every input gets a gradient
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b), name
