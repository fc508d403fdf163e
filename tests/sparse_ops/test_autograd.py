"""The ops inside the autograd machinery users wrap around them, where the op testers' cases do not reach:
in-place changes of results whose forward made a view (one channel, one image), checkpointing with an
assignment captured in the closure, batched gradients of channels-last inputs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from sparse_ops import SuperpixelAssignment, superpixel_pool, uniformize

# module constants only: a test draws from its own generator, so that its inputs do not depend on which tests
# of the module ran before it in the same process (the order, -k, the xdist split)
G = torch.Generator().manual_seed(0)
SP = torch.randint(0, 5, (1, 3, 4), generator=G)
MASK = torch.rand(1, 3, 4, generator=G) > 0.3

# one image, one channel: the forwards returned views (a slice of the sums, a read of a CSR product)
ONE_CHANNEL: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, ...]]] = {
    "pool_sum": (lambda t: superpixel_pool(t, SP, 6, reduce="sum"), (1, 1, 3, 4)),
    "pool_sum_masked": (lambda t: superpixel_pool(t, SP, 6, mask=MASK, reduce="sum"), (1, 1, 3, 4)),
    "pool_sum_sparse": (lambda t: superpixel_pool(t, SP, 6, reduce="sum", backend="sparse"), (1, 3, 3, 4)),
    "uniformize_sparse": (lambda t: uniformize(t, SP, 6, backend="sparse"), (1, 1, 3, 4)),
    "unpool_sparse": (
        lambda t: SuperpixelAssignment(SP, 6, backend="sparse").decode(t),
        (1, 6, 1),
    ),
    "uniformize_channels_last": (
        lambda t: uniformize(t.contiguous(memory_format=torch.channels_last), SP, 6),
        (1, 3, 3, 4),
    ),
}


@pytest.mark.parametrize("name", list(ONE_CHANNEL))
def test_results_can_be_changed_in_place_before_the_backward(name: str) -> None:
    fn, shape = ONE_CHANNEL[name]
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    (expected,) = torch.autograd.grad(torch.relu(fn(x)).sum() * 2, x)
    out = fn(x)
    torch.relu_(out.mul_(2))  # "a view created inside a custom Function" was refused here
    (got,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_checkpoint_with_an_assignment_in_the_closure(reentrant: bool, backend: str) -> None:
    """Recomputing the forward in the backward reuses the captured assignment (and its cached CSR matrices):
    the gradients of the plain run, with a mask."""
    g = torch.Generator().manual_seed(2)
    sp = torch.randint(0, 7, (2, 5, 6), generator=g)
    mask = torch.rand(2, 5, 6, generator=g) > 0.3
    a = SuperpixelAssignment(sp, 7, mask=mask, backend=backend)  # type: ignore[arg-type]

    def block(t: torch.Tensor) -> torch.Tensor:
        return a.decode(a.encode(t) * 3) + a.uniformize(t).square()

    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=g)
    plain, ckpt = x.clone().requires_grad_(), x.clone().requires_grad_()
    block(plain).pow(3).sum().backward()
    checkpoint(block, ckpt, use_reentrant=reentrant).pow(3).sum().backward()
    assert ckpt.grad is not None
    torch.testing.assert_close(ckpt.grad, plain.grad, rtol=0, atol=0)


SP2 = torch.randint(0, 6, (2, 3, 4), generator=G)
MASK2 = torch.rand(2, 3, 4, generator=G) > 0.3
CHANNELS_LAST: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniformize": lambda t: uniformize(t, SP2, 6),
    "uniformize_masked": lambda t: uniformize(t, SP2, 6, mask=MASK2),
    "assignment": lambda t: SuperpixelAssignment(SP2, 6, mask=MASK2).uniformize(t),
}


@pytest.mark.parametrize("name", list(CHANNELS_LAST))
def test_batched_gradients_of_channels_last_inputs(name: str) -> None:
    """``is_grads_batched=True`` (and ``jacobian(vectorize=True)``) runs the backward on a legacy batched
    tensor, which the channels-last row path (per-image ``out=`` and in-place writes) cannot take: the
    gradients of a loop over the batched grad outputs."""
    fn = CHANNELS_LAST[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, generator=g)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = fn(x)
    v = torch.randn(3, 2, 3, 4, 3, dtype=y.dtype, generator=g).permute(0, 1, 4, 2, 3)  # channels last each
    (got,) = torch.autograd.grad(y, x, v, is_grads_batched=True, retain_graph=True)
    expected = torch.stack([torch.autograd.grad(y, x, vi, retain_graph=True)[0] for vi in v])
    torch.testing.assert_close(got, expected)
