"""torch.func on the linear superpixel maps: jvp, vmap (an extra leading dim) and grad, against autograd."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.func as tf

import sparse_ops as so
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


_G = torch.Generator().manual_seed(11)
ASSOC = torch.softmax(torch.randn(1, 9, 4, 4, generator=_G), 1)
TARGET = torch.randint(0, 4, (1, 4, 4), generator=_G)
FEATURES = torch.randn(1, 2, 4, 4, generator=_G)
#: (op of the mapped tensor, what the refusal names, the fix): value checks that read the mapped tensor on
#: the host; PyTorch's error named nothing ("Cannot access data pointer of Tensor that doesn't have storage")
MAPPED_VALUE_CHECKS: dict[str, tuple[Callable[..., torch.Tensor], str, str]] = {
    "spixel_loss assoc": (
        lambda q, **kw: so.spixel_loss(q, TARGET, 2, num_classes=4, **kw).total,
        "validate=True checks the values of assoc on the host",
        "pass validate=False",
    ),
    "spixel_loss target": (
        lambda t, **kw: so.spixel_loss(ASSOC, t, 2, num_classes=4, **kw).total,
        "validate=True checks the labels of target on the host",
        "pass validate=False",
    ),
    "spixel_loss target, num_classes=None": (
        lambda t, **kw: so.spixel_loss(ASSOC, t, 2, validate=False).total,
        "num_classes=None infers the class count from the largest label of target",
        "pass num_classes \\(an int\\)",
    ),
    "normalize_assoc": (
        lambda q, **kw: so.normalize_assoc(q, 2, **kw),
        "validate=True checks the values of assoc on the host",
        "pass validate=False",
    ),
    "soft_uniformize": (
        lambda q, **kw: so.soft_uniformize(FEATURES, q, 2, **kw),
        "validate=True checks the values of assoc on the host",
        "pass validate=False",
    ),
    "hard_superpixels": (
        lambda q, **kw: so.hard_superpixels(q, 2, **kw),
        "validate=True checks assoc for NaN on the host",
        "pass validate=False",
    ),
}


@pytest.mark.parametrize("name", list(MAPPED_VALUE_CHECKS))
@pytest.mark.parametrize("nested", [False, True])
def test_a_value_check_of_a_mapped_tensor_names_itself_and_validate_false_maps(
    name: str, nested: bool
) -> None:
    """``vmap`` over a tensor that a value check reads on the host: a NotImplementedError naming the check and
    the fix, also inside ``grad`` (a wrapped mapped tensor); with the fix the op maps, as a loop gives it."""
    op, what, fix = MAPPED_VALUE_CHECKS[name]
    mapped = torch.stack([TARGET, 3 - TARGET]) if "target" in name else torch.stack([ASSOC, ASSOC.flip(-1)])
    if nested and "target" in name:
        pytest.skip("an integer target is not differentiated")

    def call(**kw: bool) -> torch.Tensor:
        if nested:
            return tf.vmap(tf.grad(lambda q: op(q, **kw).sum()))(mapped)
        return tf.vmap(lambda t: op(t, **kw))(mapped)

    kwargs = {} if "num_classes=None" in name else {"validate": True}
    with pytest.raises(NotImplementedError, match=f"^{what}.*: {fix}"):
        call(**kwargs)
    if "num_classes=None" in name:
        return
    got = call(validate=False)
    if nested:
        want = torch.stack([torch.func.grad(lambda q: op(q, validate=False).sum())(m) for m in mapped])
    else:
        want = torch.stack([op(m, validate=False) for m in mapped])
    torch.testing.assert_close(got, want)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # (vmap of scatter_)
def test_max_unpool_maps_over_its_indices_with_validate_false() -> None:
    """``max_unpool2d`` under ``vmap`` over its indices: the range check names itself (it read nothing but
    PyTorch's error before), and without it the op maps."""
    g = torch.Generator().manual_seed(13)
    pooled = so.max_pool2d_with_indices(torch.randn(2, 1, 1, 4, 4, generator=g).flatten(0, 1))
    values, indices = pooled.values[:, None], pooled.indices[:, None]
    with pytest.raises(NotImplementedError, match=r"^validate=True checks the range of indices on the host"):
        tf.vmap(lambda v, i: so.max_unpool2d(v, i, (4, 4)))(values, indices)
    got = tf.vmap(lambda v, i: so.max_unpool2d(v, i, (4, 4), validate=False))(values, indices)
    torch.testing.assert_close(
        got, torch.stack([so.max_unpool2d(v, i, (4, 4)) for v, i in zip(values, indices, strict=True)])
    )
