"""torch.func on the linear superpixel maps: jvp, vmap (an extra leading dim) and grad, against autograd."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.func as tf

from sparse_ops import enforce_connectivity, superpixel_pool, superpixel_unpool, uniformize

# torch loads its forward-AD decompositions with torch.jit.script on the first dual tensor
# (torch/_decomp/decompositions_for_jvp.py), which warns on torch >= 2.14; not our code
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

G = torch.Generator().manual_seed(0)
SP = torch.randint(0, 5, (2, 3, 4), generator=G)
MASK = torch.rand(2, 3, 4, generator=G) > 0.3
X = torch.randn(2, 3, 3, 4, generator=G, dtype=torch.float64)
POOLED = torch.randn(2, 6, 3, generator=G, dtype=torch.float64)

OPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {
    "uniformize": (lambda t: uniformize(t, SP, 6), X),
    "uniformize_masked": (lambda t: uniformize(t, SP, 6, mask=MASK), X),
    "uniformize_sparse": (lambda t: uniformize(t, SP, 6, mask=MASK, backend="sparse"), X),
    "pool_mean": (lambda t: superpixel_pool(t, SP, 6, mask=MASK), X),
    "pool_sum_sparse": (lambda t: superpixel_pool(t, SP, 6, reduce="sum", backend="sparse"), X),
    "unpool": (lambda t: superpixel_unpool(t, SP), POOLED),
}


@pytest.fixture(params=list(OPS))
def op(request: pytest.FixtureRequest) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    return OPS[request.param]


def test_jvp_equals_the_autograd_jvp(op) -> None:  # type: ignore[no-untyped-def]
    fn, x = op
    tangent = torch.randn_like(x)
    value, jvp = tf.jvp(fn, (x,), (tangent,))
    _, expected = torch.autograd.functional.jvp(fn, x, tangent)
    torch.testing.assert_close(value, fn(x))
    torch.testing.assert_close(jvp, expected)
    torch.testing.assert_close(tf.jacfwd(fn)(x), tf.jacrev(fn)(x))


def test_vmap_over_a_leading_dim_equals_the_loop(op) -> None:  # type: ignore[no-untyped-def]
    fn, x = op
    xs = torch.stack([x, 2 * x + 1, -x])
    torch.testing.assert_close(tf.vmap(fn)(xs), torch.stack([fn(v) for v in xs]))
    moved = xs.movedim(0, 2)  # the mapped dim elsewhere, and out_dims elsewhere too
    torch.testing.assert_close(tf.vmap(fn, in_dims=2, out_dims=1)(moved), torch.stack([fn(v) for v in xs], 1))


def test_grad_equals_autograd(op) -> None:  # type: ignore[no-untyped-def]
    fn, x = op

    def loss(t: torch.Tensor) -> torch.Tensor:
        return (fn(t) ** 2).sum()

    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(loss(leaf), leaf)
    torch.testing.assert_close(tf.grad(loss)(x), expected)
    per_sample = tf.vmap(tf.grad(loss))(torch.stack([x, -x]))
    torch.testing.assert_close(per_sample, torch.stack([expected, -expected]))


POOLED_GRAD = POOLED.clone().requires_grad_()
MAPPED_LABEL_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniformize": lambda s: uniformize(X, s, 6),
    "uniformize_unvalidated": lambda s: uniformize(X, s, 6, validate=False),
    "pool": lambda s: superpixel_pool(X, s, 6),
    "pool_max_sparse": lambda s: superpixel_pool(X, s, 6, reduce="max", backend="sparse"),
    "unpool_with_grad": lambda s: superpixel_unpool(POOLED_GRAD, s),
    # before: "RuntimeError: Cannot access data pointer of Tensor that doesn't have storage"
    "enforce_connectivity": lambda s: enforce_connectivity(s)[0],
}


@pytest.mark.parametrize("name", list(MAPPED_LABEL_OPS))
def test_vmap_over_the_label_map_is_refused_clearly(name: str) -> None:
    with pytest.raises(NotImplementedError, match="over the features only, not over superpixels: loop over"):
        tf.vmap(MAPPED_LABEL_OPS[name])(torch.stack([SP, SP]))


@pytest.mark.parametrize("validate", [True, False])
def test_vmap_over_the_mask_is_refused_clearly(validate: bool) -> None:
    with pytest.raises(NotImplementedError, match="over the features only, not over mask"):
        tf.vmap(lambda m: uniformize(X, SP, 6, mask=m, validate=validate))(torch.stack([MASK, ~MASK]))
