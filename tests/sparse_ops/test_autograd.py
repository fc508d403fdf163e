"""The ops inside the autograd machinery users wrap around them, where the op testers' cases do not reach:
in-place changes of results whose forward made a view (one channel, one image), checkpointing with an
assignment captured in the closure, batched gradients of channels-last inputs, and float64 gradchecks (reverse
and forward mode) of the differentiable paths that the op testers' small cases do not take."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from sparse_ops import (
    SuperpixelAssignment,
    max_pool2d_with_indices,
    max_unpool2d,
    normalize_assoc,
    soft_superpixel_pool,
    soft_superpixel_unpool,
    soft_uniformize,
    spixel_loss,
    superpixel_cam,
    superpixel_pool,
    superpixel_unpool,
    uniformize,
)

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


# ---------------------------------------------------------------------------------------------- gradcheck
# float64 gradcheck of the differentiable paths that the op testers' small cases (contiguous inputs, one
# backend and one mask setting per class, renormalize=True, gradients to the first argument only) do not take:
# the other backend and mask settings, channels-last inputs (the pixel-row kernels), a reused assignment (its
# cached CSR matrices), the extra accumulators of large superpixels, N_s = 1 and one-pixel images, every
# reduce mode unmasked, the classifier's weight and bias, the soft ops with renormalize=False and exact zero
# weights, the loss's gradient to a dense target, an unbatched max unpooling. The custom Functions' jvp too
# (forward-mode gradcheck).
Builder = Callable[[], tuple[Callable[..., object], tuple[torch.Tensor, ...]]]


def _labels(g: torch.Generator, masked: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A [2, 3, 4] label map with ids in [0, 7): id 5 empty in both images, and (masked) a superpixel of
    image 1 without any counted pixel (its pixels keep their values in uniformize, it pools to 0)."""
    sp = torch.randint(0, 5, (2, 3, 4), generator=g)
    sp[1, 0, 0] = 6
    if not masked:
        return sp, None
    mask = torch.rand(2, 3, 4, generator=g) > 0.4
    mask[1] &= sp[1] != 6
    return sp, mask


def _features(g: torch.Generator, layout: str, channels: int = 3) -> torch.Tensor:
    x = torch.randn(2, channels, 3, 4, generator=g, dtype=torch.float64)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _hard(op: str, backend: str, masked: bool, layout: str) -> Builder:
    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(11)
        sp, mask = _labels(g, masked)
        x = _features(g, layout)
        kw = {"mask": mask, "backend": backend}
        if op == "uniformize":
            return (lambda t: uniformize(t, sp, 7, **kw)), (x,)  # type: ignore[arg-type]
        if op.startswith("pool_"):
            reduce = op.removeprefix("pool_")
            return (lambda t: superpixel_pool(t, sp, 7, reduce=reduce, **kw)), (x,)  # type: ignore[arg-type]
        # a reused assignment: built once (under inference mode, as in an evaluation pass) for every call
        with torch.inference_mode():
            a = SuperpixelAssignment(sp, 7, mask=mask, backend=backend)  # type: ignore[arg-type]
        if op == "assignment_decode":
            pooled = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
            if layout == "channels_last":
                pooled = pooled.transpose(1, 2).contiguous().transpose(1, 2)
            return a.decode, (pooled,)
        return getattr(a, op.removeprefix("assignment_")), (x,)

    return build


HARD_CASES: dict[str, Builder] = {
    f"{op}-{backend}-{'masked' if masked else 'all'}-{layout}": _hard(op, backend, masked, layout)
    for op in (
        "uniformize",
        "pool_mean",
        "pool_sum",
        "pool_max",
        "assignment_uniformize",
        "assignment_decode",
    )
    for backend in ("scatter", "sparse", "auto")
    for masked in (False, True)
    for layout in ("contiguous", "channels_last")
    # "auto" is "scatter" on the CPU: once, for the public op; "max" always scatters
    if (backend != "auto" or (op == "uniformize" and layout == "contiguous"))
    and not (op == "pool_max" and backend == "sparse")
}


def _one_superpixel(backend: str, layout: str) -> Builder:
    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        x = _features(torch.Generator().manual_seed(12), layout)
        return (lambda t: uniformize(t, torch.zeros(2, 3, 4, dtype=torch.long), 1, backend=backend)), (x,)  # type: ignore[arg-type]

    return build


def _one_pixel(op: str, backend: str) -> Builder:
    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        x = torch.randn(1, 2, 1, 1, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
        sp = torch.zeros(1, 1, 1, dtype=torch.long)
        fn = uniformize if op == "uniformize" else superpixel_pool
        return (lambda t: fn(t, sp, 1, backend=backend)), (x,)  # type: ignore[arg-type]

    return build


def _large_superpixel(op: str, backend: str, masked: bool, layout: str) -> Builder:
    """One superpixel of 24 x 24 = 576 pixels, more than P K = 4 x 128: extra accumulators (float64 sums)."""

    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(14)
        sp = torch.zeros(1, 24, 24, dtype=torch.long)
        mask = torch.rand(1, 24, 24, generator=g) > 0.1 if masked else None
        if op == "unpool":
            return (lambda p: superpixel_unpool(p, sp)), (
                torch.randn(1, 1, 2, generator=g, dtype=torch.float64),
            )
        x = torch.randn(1, 2, 24, 24, generator=g, dtype=torch.float64)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        fn = uniformize if op == "uniformize" else superpixel_pool
        return (lambda t: fn(t, sp, 1, mask=mask, backend=backend)), (x,)  # type: ignore[arg-type]

    return build


def _upsampled(mode: str) -> Builder:
    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(15)
        sp, mask = _labels(g, True)
        x = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
        return (lambda t: superpixel_pool(t, sp, 7, mask=mask, upsample=mode)), (x,)  # type: ignore[arg-type]

    return build


def _cam(masked: bool, bias: bool) -> Builder:
    """Gradients to the classifier's weight and bias too (the op tester differentiates the features only);
    absent ids score the classifier at a zero mean."""

    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(16)
        sp, mask = _labels(g, masked)
        x = _features(g, "contiguous")
        w = torch.randn(4, 3, generator=g, dtype=torch.float64)
        b = torch.randn(4, generator=g, dtype=torch.float64)

        def fn(f: torch.Tensor, weight: torch.Tensor, *rest: torch.Tensor) -> object:
            return superpixel_cam(
                f,
                sp,
                9,
                weight=weight,
                bias=rest[0] if rest else None,
                mask=mask,
                return_superpixel_scores=True,
            )

        return fn, (x, w, b) if bias else (x, w)

    return build


def _soft(op: str, renormalize: bool, masked: bool, zeros: bool, cell: int = 3) -> Builder:
    """``zeros``: a third of the weights exactly 0 (``validate=False``: the finite differences step below 0),
    every pixel keeping some valid mass and every cell some mass (where the maps are smooth)."""

    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(17)
        a = torch.rand(2, 9, 5, 7, generator=g, dtype=torch.float64) + 0.05
        if zeros:
            a = a * (torch.rand(2, 9, 5, 7, generator=g, dtype=torch.float64) > 0.3)
            a[:, 4] += 0.1  # the own cell: valid for every pixel
        f = torch.randn(2, 2, 5, 7, generator=g, dtype=torch.float64)
        mask = torch.rand(2, 5, 7, generator=g) > 0.3 if masked else None
        kw = {"renormalize": renormalize, "validate": not zeros}
        if op == "normalize_assoc":
            return (lambda q: normalize_assoc(q, cell, **kw)), (a,)
        if op == "unpool":
            n_h, n_w = -(-5 // cell), -(-7 // cell)
            c = torch.randn(2, 2, n_h, n_w, generator=g, dtype=torch.float64)
            return (lambda c_, q: soft_superpixel_unpool(c_, q, cell, **kw)), (c, a)
        fn = soft_uniformize if op == "uniformize" else soft_superpixel_pool
        return (lambda f_, q: fn(f_, q, cell, mask=mask, **kw)), (f, a)

    return build


def _loss(target_kind: str, renormalize: bool, masked: bool) -> Builder:
    def build() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(18)
        assoc = torch.softmax(torch.randn(2, 9, 5, 6, generator=g, dtype=torch.float64), 1)
        mask = torch.rand(2, 5, 6, generator=g) > 0.3 if masked else None
        kw = {"mask": mask, "renormalize": renormalize, "pos_weight": 0.3}
        if target_kind == "dense":  # the gradient reaches the target features too
            dense = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
            return (lambda q, t: spixel_loss(q, t, 3, **kw)), (assoc, dense)  # type: ignore[arg-type]
        labels = torch.randint(0, 3, (2, 5, 6), generator=g)
        labels[0, 0, 0] = 255
        return (lambda q: spixel_loss(q, labels, 3, num_classes=3, **kw)), (assoc,)  # type: ignore[arg-type]

    return build


def _unbatched_unpool() -> tuple[Callable[..., object], tuple[torch.Tensor, ...]]:
    x = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(19), dtype=torch.float64)
    pooled = max_pool2d_with_indices(x, 2)
    return (lambda v: max_unpool2d(v, pooled.indices, pooled.input_size)), (pooled.values,)


OTHER_CASES: dict[str, Builder] = {
    **{
        f"uniformize-one_superpixel-{b}-{lay}": _one_superpixel(b, lay)
        for b in ("scatter", "sparse")
        for lay in ("contiguous", "channels_last")
    },
    **{
        f"{op}-one_pixel-{b}": _one_pixel(op, b)
        for op in ("uniformize", "pool")
        for b in ("scatter", "sparse")
    },
    **{
        f"{op}-large_superpixel-{b}-{'masked' if m else 'all'}-{lay}": _large_superpixel(op, b, m, lay)
        for op in ("uniformize", "pool")
        for b in ("scatter", "sparse")
        for m in (False, True)
        for lay in ("contiguous", "channels_last")
    },
    "unpool-large_superpixel": _large_superpixel("unpool", "scatter", False, "contiguous"),
    **{f"pool-upsample-{mode}": _upsampled(mode) for mode in ("bilinear", "nearest", "bicubic", "area")},
    **{
        f"cam-{'masked' if m else 'all'}-{'bias' if b else 'no_bias'}": _cam(m, b)
        for m in (False, True)
        for b in (False, True)
    },
    **{
        f"soft_{op}-renormalize_{r}-{'masked' if m else 'all'}-{'zeros' if z else 'positive'}": _soft(
            op, r, m, z
        )
        for op in ("pool", "uniformize", "unpool", "normalize_assoc")
        for r in (True, False)
        for m in ((False, True) if op in ("pool", "uniformize") else (False,))
        for z in (False, True)
    },
    "soft_uniformize-cell_of_one_pixel": _soft("uniformize", True, True, False, cell=1),
    "soft_uniformize-cell_above_the_image": _soft("uniformize", True, True, False, cell=9),
    **{
        f"spixel_loss-{t}-renormalize_{r}-{'masked' if m else 'all'}": _loss(t, r, m)
        for t in ("labels", "dense")
        for r in (True, False)
        for m in (False, True)
    },
    "max_unpool2d-unbatched": _unbatched_unpool,
}


def _gradcheck(fn: Callable[..., object], inputs: tuple[torch.Tensor, ...], fast: bool) -> None:
    def outputs(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = fn(*args)
        items = result if isinstance(result, tuple) else (result,)
        return tuple(t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point())

    leaves = tuple(t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(outputs, leaves, fast_mode=fast, check_batched_grad=True)
    assert torch.autograd.gradcheck(  # the jvp of the custom Functions (forward-mode AD)
        outputs,
        leaves,
        fast_mode=fast,
        check_forward_ad=True,
        check_backward_ad=False,
        check_undefined_grad=False,
    )


# torch loads its forward-AD decompositions with torch.jit.script on the first dual tensor, which warns on
# torch >= 2.14 (as in test_functorch.py); not our code
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:FutureWarning"


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("name", list(HARD_CASES))
def test_gradcheck_of_the_hard_ops(name: str) -> None:
    fn, inputs = HARD_CASES[name]()
    _gradcheck(fn, inputs, fast="-sparse-" in name)  # a CSR product per column of a full Jacobian: slow


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("name", list(OTHER_CASES))
def test_gradcheck_of_the_other_paths(name: str) -> None:
    fn, inputs = OTHER_CASES[name]()
    # fast mode where a full Jacobian is slow: 576 pixels, 9 association channels, CSR products
    slow = ("soft_", "spixel_loss", "uniformize-large", "pool-large", "uniformize-one_superpixel-sparse")
    _gradcheck(fn, inputs, fast=name.startswith(slow))
