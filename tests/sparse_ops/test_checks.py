"""The one validation module: integers as operator.index takes them, messages naming argument and values."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import sparse_ops as so
from sparse_ops import SuperpixelAssignment, _checks, superpixel_pool, superpixel_unpool, uniformize


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), torch.tensor(3)])
def test_integers_are_accepted_wherever_python_ints_are(value: object) -> None:
    assert _checks.check_int(value, "n", 1) == 3
    assert _checks.check_pair(value, "k", 1) == (3, 3)
    assert _checks.check_num_superpixels(value, 2) == 3


@pytest.mark.parametrize(
    "value, exc, match",
    [
        (True, TypeError, "n must be an int, got bool True"),
        (2.0, TypeError, "n must be an int, got float 2.0"),
        ("2", TypeError, "n must be an int, got str '2'"),
        (0, ValueError, "n must be >= 1, got 0"),
        (torch.tensor(True), TypeError, r"n must be an int, got Tensor of shape \(\) and dtype torch.bool"),
        (torch.tensor([[3]]), TypeError, r"n must be an int, got Tensor of shape \(1, 1\) and dtype"),
        # before: PyTorch's "value cannot be converted to type int64_t without overflow", naming nothing
        (
            torch.tensor(2**64 - 1, dtype=torch.uint64),
            ValueError,
            r"n must fit int64 .*got uint64 18446744073709551615$",
        ),
        # before: "Tensor.item() cannot be called on meta tensors"
        (
            torch.tensor(3, device="meta"),
            TypeError,
            r"n must be an int, got .* on the meta device \(it holds",
        ),
    ],
)
def test_check_int_errors(value: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        _checks.check_int(value, "n", 1)


def test_pairs_options_and_numbers() -> None:
    assert _checks.check_pair((1, np.int64(2)), "stride", 1) == (1, 2)
    with pytest.raises(TypeError, match=r"stride must be an int or a pair of ints, got \(1, 2, 3\)"):
        _checks.check_pair((1, 2, 3), "stride", 1)
    with pytest.raises(ValueError, match=r"padding must be >= 0, got \(0, -1\)"):
        _checks.check_pair((0, -1), "padding", 0)
    with pytest.raises(ValueError, match=r"reduce must be one of \('mean', 'sum'\), got 'max'"):
        _checks.check_option("max", "reduce", ("mean", "sum"))
    assert _checks.check_number(np.float32(0.5), "w", 0.0) == 0.5
    for text in ("0.5", b"0.5"):  # float() would parse them: refused like any other non-number
        with pytest.raises(TypeError, match=r"w must be a real number, got (str|bytes)"):
            _checks.check_number(text, "w", 0.0)
    with pytest.raises(ValueError, match=r"w must be a number >= 0\.0, got nan"):
        _checks.check_number(float("nan"), "w", 0.0)
    assert _checks.check_number(torch.tensor(0.5, dtype=torch.float64), "w", 0.0) == 0.5  # a 0-d tensor
    # refused as integers are (check_int) and as transparent_init's reals are: a bool of any kind and a tensor
    # that is not 0-d (float() read True as 1.0 and torch.tensor([0.5]) as 0.5)
    for wrong in (True, np.bool_(False), torch.tensor(True), torch.tensor([0.5])):
        with pytest.raises(TypeError, match=r"w must be a real number, got (bool|Tensor of shape)"):
            _checks.check_number(wrong, "w", 0.0)


def test_a_numpy_bool_array_is_not_a_number() -> None:
    """float(np.array(True)) is 1.0: spixel_loss(pos_weight=np.array(True)) ran with pos_weight 1.0, although
    a bool of any kind is refused (np.bool_(True) and torch.tensor(True) were)."""
    for wrong in (np.array(True), np.array(False)):
        with pytest.raises(
            TypeError, match=r"w must be a real number, got a numpy bool array array\((True|False)\)"
        ):
            _checks.check_number(wrong, "w", 0.0)
    assoc = torch.softmax(torch.randn(1, 9, 4, 4, generator=torch.Generator().manual_seed(0)), 1)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"pos_weight must be a real number, got a numpy bool array"):
        so.spixel_loss(assoc, target, 2, pos_weight=np.array(True))
    assert _checks.check_number(np.array(0.5), "w", 0.0) == 0.5  # a 0-d number array is still a number


def test_a_complex_or_meta_value_is_not_a_real_number() -> None:
    """A numpy complex passed float() with a ComplexWarning, its imaginary part dropped
    (spixel_loss(pos_weight=np.complex128(1 + 1j)) ran with 1.0), and so did a complex tensor with a zero
    imaginary part; one with another raised PyTorch's RuntimeError ("value cannot be converted to type double
    without overflow") and a tensor on the meta device "Tensor.item() cannot be called on meta tensors",
    naming no argument. Each is refused as check_int refuses them, naming the argument."""
    wrong = (np.complex128(1 + 1j), np.complex64(1), torch.tensor(1j), torch.tensor(1 + 0j))
    for value in wrong:
        with pytest.raises(TypeError, match=r"w must be a real number, got (complex|Tensor of shape)"):
            _checks.check_number(value, "w", 0.0)
    with pytest.raises(
        TypeError, match=r"w must be a real number, got Tensor .* on the meta device \(it holds no value\)"
    ):
        _checks.check_number(torch.tensor(0.5, device="meta"), "w", 0.0)
    assoc = torch.softmax(torch.randn(1, 9, 4, 4, generator=torch.Generator().manual_seed(0)), 1)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"pos_weight must be a real number, got complex"):
        so.spixel_loss(assoc, target, 2, pos_weight=np.complex128(1 + 1j))
    with pytest.raises(TypeError, match=r"eps must be a real number, got Tensor .* on the meta device"):
        so.SpixelLoss(2, eps=torch.tensor(1e-8, device="meta"))


def test_an_int_beyond_the_float_range_is_an_infinite_number() -> None:
    """float(10**400) raises an OverflowError that names no argument (spixel_loss(pos_weight=10**400) raised
    it); such an int rounds to inf, as a float overflow does, and is then checked as inf is: accepted where
    an infinite number is, refused with ``finite`` (spixel_loss's ``pos_weight`` and ``eps``, whose infinite
    values gave an infinite loss: tests/sparse_ops/test_losses.py)."""
    assert _checks.check_number(10**400, "w", 0.0) == float("inf")
    assert _checks.check_number(float("inf"), "w", 0.0) == float("inf")
    with pytest.raises(ValueError, match=r"w must be a number >= 0\.0, got -1000"):
        _checks.check_number(-(10**400), "w", 0.0)
    with pytest.raises(ValueError, match=r"w must be a finite number >= 0\.0, got 1000.*, beyond the float"):
        _checks.check_number(10**400, "w", 0.0, finite=True)
    with pytest.raises(ValueError, match=r"w must be a finite number >= 0\.0, got inf$"):
        _checks.check_number(float("inf"), "w", 0.0, finite=True)
    assert _checks.check_number(1e308, "w", 0.0, finite=True) == 1e308


def test_one_images_label_map_is_told_to_take_a_batch_dim() -> None:
    """An ``[H, W]`` map (scikit-image's slic, ``relabel_contiguous`` and ``grid_cell_ids`` of one image give
    it) to an op that takes ``[B, H, W]``: the error said only the shapes it takes; it now names the fix, and
    the fix runs (``superpixel_pool(x, *relabel_contiguous(sp))`` as ``SuperpixelIds`` documents it)."""
    sp = torch.tensor([[1, 1, 4], [4, 9, 9]])
    x = torch.randn(1, 3, 2, 3)
    shapes = r"^superpixels must have shape \[B, H, W\] or \[B, 1, H, W\], got shape \(2, 3\)"
    fix = r": one image's \[H, W\] map takes a batch dim, superpixels\[None\]$"
    for call in (lambda: uniformize(x, sp), lambda: superpixel_pool(x, *so.relabel_contiguous(sp))):
        with pytest.raises(ValueError, match=shapes + fix):
            call()
    ids, k = so.relabel_contiguous(sp)
    assert superpixel_pool(x, ids[None], k).shape == (1, 3, 3)
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 3, 1\)$"):  # no hint for other shapes
        uniformize(x, sp[None, ..., None])


def test_slot_limit_names_the_largest_id_and_the_fix() -> None:
    assert _checks.slot_limit(16) == 2**16 and _checks.slot_limit(2**20) == 2**24
    _checks.check_slot_count(2**16, 16, inferred=True)
    with pytest.raises(
        ValueError, match=r"the largest id of labels is 65536, .*relabel_contiguous\(labels\)"
    ):
        _checks.check_slot_count(2**16 + 1, 16, inferred=True, name="labels")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_label_maps_give_the_int64_results(dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 4, 5)
    sp = torch.randint(0, 6, (2, 4, 5))
    unsigned = sp.to(dtype)
    assert torch.equal(uniformize(x, unsigned), uniformize(x, sp))
    assert torch.equal(superpixel_pool(x, unsigned), superpixel_pool(x, sp))
    pooled = torch.randn(2, 6, 3, requires_grad=True)
    assert torch.equal(superpixel_unpool(pooled, unsigned), superpixel_unpool(pooled, sp))
    with pytest.raises(ValueError, match="ids must be < num_superpixels = 5, got the id 5"):
        uniformize(x, torch.full_like(unsigned, 5), 5)


def test_uint64_ids_beyond_int64_are_refused_with_the_fix() -> None:
    sp = torch.tensor([[[-(2**63), 0], [0, 0]]]).view(torch.uint64)  # 2**63 (torch 2.11 cannot assign it)
    assert sp.dtype == torch.uint64 and sp[0, 0, 0].view(torch.int64) == -(2**63)
    with pytest.raises(ValueError, match=r"uint64 ids above 2\*\*63 - 1.*relabel_contiguous\(superpixels\)"):
        uniformize(torch.randn(1, 1, 2, 2), sp)


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_per_image_counts_give_the_int64_results(dtype: torch.dtype, validate: bool) -> None:
    x = torch.randn(2, 3, 4, 5)
    sp = torch.randint(0, 6, (2, 4, 5))
    counts = torch.tensor([6, 7])
    unsigned = counts.to(dtype)
    checked = _checks.check_num_superpixels(unsigned, 2)
    assert isinstance(checked, torch.Tensor) and torch.equal(checked.long(), counts)
    for op in (uniformize, superpixel_pool):
        assert torch.equal(op(x, sp, unsigned, validate=validate), op(x, sp, counts, validate=validate))
    a = SuperpixelAssignment(sp, unsigned, validate=validate)
    assert a.num_superpixels == 7 and torch.equal(a.encode(x), SuperpixelAssignment(sp, counts).encode(x))
    if validate:
        with pytest.raises(
            ValueError, match=r"ids of image 0 must be < num_superpixels\[0\] = 3, got the id"
        ):
            superpixel_pool(x, sp.clamp_min(3), torch.tensor([3, 7]).to(dtype))


@pytest.mark.parametrize("validate", [True, False])
def test_uint64_counts_beyond_int64_are_refused_with_the_fix(validate: bool) -> None:
    counts = torch.tensor([-(2**63), 6]).view(torch.uint64)  # 2**63 (torch cannot assign it)
    with pytest.raises(
        ValueError,
        match=r"num_superpixels holds uint64 counts above 2\*\*63 - 1.*got \[9223372036854775808, 6\]",
    ):
        superpixel_pool(
            torch.randn(2, 1, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long), counts, validate=validate
        )


def _shape_mistakes() -> list[tuple[str, object, str]]:
    """One call per public op with a shape or type mistake that only the always-run checks catch, with
    ``validate=False``, and the op's own message."""
    import sparse_ops as so

    g = torch.Generator().manual_seed(0)
    x, sp = torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 4, (2, 8, 8), generator=g)
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    q = torch.softmax(torch.randn(2, 9, 8, 8, generator=g), 1)
    v, i, _ = so.max_pool2d_with_indices(x, 2)
    return [
        ("uniformize", lambda: so.uniformize(x, sp[:1], 4, validate=False), r"superpixels must have shape"),
        (
            "superpixel_pool",
            lambda: so.superpixel_pool(x, sp, 4, mask=mask[:, :4], validate=False),
            r"mask must have shape \[B, H, W\] = \[2, 8, 8\]",
        ),
        (
            "superpixel_unpool",
            lambda: so.superpixel_unpool(torch.randn(2, 4, 3), sp.float(), validate=False),
            r"superpixels must have an integer dtype",
        ),
        (
            "SuperpixelAssignment",
            lambda: so.SuperpixelAssignment(sp, 4, validate=False).uniformize(x[:1]),
            r"^x must have shape \[B, C, H, W\] = \[2, C, 8, 8\] like the label map",
        ),
        (
            "soft_uniformize",
            lambda: so.soft_uniformize(x, q[:, :, :4], 4, validate=False),
            r"logits and assoc must agree in batch size and spatial size",
        ),
        (
            "soft_superpixel_unpool",
            lambda: so.soft_superpixel_unpool(x, q, 4, validate=False),
            r"centres must have shape \[B=2, C, n_h=2, n_w=2\]",
        ),
        (
            "spixel_loss",
            lambda: so.spixel_loss(q, sp[:, :4], 4, validate=False),
            r"target must have batch size 2 and spatial size \(8, 8\)",
        ),
        (
            "hard_superpixels",
            lambda: so.hard_superpixels(q[:, :8], 4, validate=False),
            r"assoc must have 9 channels",
        ),
        (
            "max_unpool2d",
            lambda: so.max_unpool2d(v, i[:1], (8, 8), validate=False),
            r"indices must have the shape of values",
        ),
        (
            "relabel_contiguous",
            lambda: so.relabel_contiguous(sp.float(), validate=False),
            r"superpixels must have an integer dtype",
        ),
    ]


@pytest.mark.parametrize("name, call, message", _shape_mistakes(), ids=[m[0] for m in _shape_mistakes()])
def test_validate_false_keeps_the_type_and_shape_checks(name: str, call, message: str) -> None:
    """``validate=False`` skips the checks that read tensor values (a host synchronisation); the type and
    shape checks read nothing and run whatever it says: each of these mistakes gave a silently wrong result
    or an error from inside the op."""
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_the_argument_swap_hint_only_where_a_label_map_follows() -> None:
    """An integer tensor given as features is often the label map passed first: said where the next argument
    is the label map, not where there is none (an assignment's method, the soft ops)."""
    import sparse_ops as so

    x, sp = torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="a label map passed first"):
        so.superpixel_pool(sp[:, None], sp)
    with pytest.raises(TypeError, match=r"^x must be a floating tensor.*convert it with x.float\(\)$"):
        so.SuperpixelAssignment(sp).pool(x.to(torch.uint8))  # (the method's argument is x)
    q = torch.full((1, 9, 3, 3), 1 / 9)
    with pytest.raises(TypeError, match=r"convert it with logits.float\(\)$"):
        so.soft_uniformize(x.long(), q, 2)


def _public_calls() -> list[tuple[str, object]]:
    import sparse_ops as so

    g = torch.Generator().manual_seed(0)
    x, sp = torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 4, (2, 8, 8), generator=g)
    mask = torch.rand(2, 8, 8, generator=g) > 0.3
    q = torch.softmax(torch.randn(2, 9, 8, 8, generator=g), 1)
    w = torch.randn(5, 3, generator=g)
    head = so.SuperpixelClassifier(3, 5)  # built outside the call: its constructor checks upsample
    return [
        ("uniformize", lambda: so.uniformize(x, sp, 4, mask=mask)),
        ("superpixel_pool", lambda: so.superpixel_pool(x, sp, 4, mask=mask, reduce="max")),
        ("superpixel_unpool", lambda: so.superpixel_unpool(torch.randn(2, 4, 3), sp)),
        ("superpixel_unpool (grad)", lambda: so.superpixel_unpool(torch.randn(2, 4, 3).requires_grad_(), sp)),
        ("SuperpixelAssignment", lambda: so.SuperpixelAssignment(sp, 4, mask=mask)),
        ("superpixel_cam", lambda: so.superpixel_cam(x, sp, 4, weight=w, mask=mask)),
        ("superpixel_global_average", lambda: so.superpixel_global_average(x, sp, 4)),
        ("SuperpixelClassifier", lambda: head(x, sp, 4, mask=mask)),
        ("soft_uniformize", lambda: so.soft_uniformize(x, q, 4, mask=mask)),
        ("spixel_loss", lambda: so.spixel_loss(q, sp, 4, mask=mask)),
        ("hard_superpixels", lambda: so.hard_superpixels(q, 4)),
        ("uniformize, count tensor", lambda: so.uniformize(x, sp, torch.tensor([4, 4]), mask=mask)),
        (
            "superpixel_pool, upsample",
            lambda: so.superpixel_pool(x[..., ::2, ::2], sp, 4, upsample="bilinear"),
        ),
        ("soft_superpixel_pool", lambda: so.soft_superpixel_pool(x, q, 4, mask=mask)),
        ("soft_superpixel_unpool", lambda: so.soft_superpixel_unpool(x[..., :2, :2], q, 4)),
        ("normalize_assoc", lambda: so.normalize_assoc(q, 4)),
    ]


@pytest.mark.parametrize("name, call", _public_calls(), ids=[c[0] for c in _public_calls()])
def test_each_input_is_checked_once_per_call(name: str, call, monkeypatch) -> None:
    """A public op checks each of its inputs once: the ops it builds on get checked inputs and do not check
    them again (the type and shape checks run whatever ``validate`` says, so a second round would be paid
    on every call)."""
    seen: list[tuple[str, object]] = []
    for fn in (
        "check_floating",
        "check_label_map",
        "check_mask",
        "check_assoc",
        "check_option",
        "check_not_vmapped",  # the flag tests too: they run whatever validate says, in every call
        "check_same_device",
        "check_batch_match",
        "check_spatial_match",
        "check_id_range",  # the value checks: a host-device synchronisation each
        "check_assoc_values",
    ):
        original = getattr(_checks, fn)

        def spy(value, *args, _fn=fn, _original=original, **kwargs):
            names = tuple(a for a in args if isinstance(a, str))  # e.g. ("features", "superpixels")
            label = names or kwargs.get("name", id(value))
            seen.append((_fn, label))
            return _original(value, *args, **kwargs)

        monkeypatch.setattr(_checks, fn, spy)
    call()
    assert seen, "no check ran: the spy is not wired"
    repeated = {entry for entry in seen if seen.count(entry) > 1}
    assert not repeated, f"{name} checks these inputs more than once: {sorted(map(str, repeated))}"


def _flag_calls() -> list[tuple[str, str, object]]:
    """(id, flag name, call passing the string "False" for that flag): truthy, so read as True if coerced."""
    import sparse_ops as so

    x, sp = torch.randn(1, 2, 5, 5), torch.zeros(1, 5, 5, dtype=torch.long)
    q = torch.full((1, 9, 5, 5), 1 / 9)
    no = "False"
    return [
        ("MaxPoolWithIndices.ceil_mode", "ceil_mode", lambda: so.MaxPoolWithIndices(2, ceil_mode=no)),
        (
            "max_pool2d_with_indices.ceil_mode",
            "ceil_mode",
            lambda: so.max_pool2d_with_indices(x, ceil_mode=no),
        ),
        ("MaxPoolWithIndices.validate", "validate", lambda: so.MaxPoolWithIndices(validate=no)),
        ("MaxUnpool.validate", "validate", lambda: so.MaxUnpool(validate=no)),
        ("SoftUniformize.renormalize", "renormalize", lambda: so.SoftUniformize(2, renormalize=no)),
        ("SoftUniformize.validate", "validate", lambda: so.SoftUniformize(2, validate=no)),
        ("soft_uniformize.renormalize", "renormalize", lambda: so.soft_uniformize(x, q, 2, renormalize=no)),
        (
            "soft_superpixel_pool.renormalize",
            "renormalize",
            lambda: so.soft_superpixel_pool(x, q, 2, renormalize=no),
        ),
        (
            "soft_superpixel_unpool.renormalize",
            "renormalize",
            lambda: so.soft_superpixel_unpool(torch.randn(1, 2, 3, 3), q, 2, renormalize=no),
        ),
        ("normalize_assoc.renormalize", "renormalize", lambda: so.normalize_assoc(q, 2, renormalize=no)),
        ("SpixelLoss.renormalize", "renormalize", lambda: so.SpixelLoss(2, renormalize=no)),
        ("SpixelLoss.validate", "validate", lambda: so.SpixelLoss(2, validate=no)),
        ("spixel_loss.renormalize", "renormalize", lambda: so.spixel_loss(q, sp, 2, renormalize=no)),
        ("SuperpixelPool.validate", "validate", lambda: so.SuperpixelPool(validate=no)),
        ("SuperpixelUniformize.validate", "validate", lambda: so.SuperpixelUniformize(validate=no)),
        ("SuperpixelClassifier.bias", "bias", lambda: so.SuperpixelClassifier(2, 3, bias=no)),
        ("hard_superpixels.connectivity", "connectivity", lambda: so.hard_superpixels(q, 2, connectivity=no)),
        (
            "hard_superpixels.return_counts",
            "return_counts",
            lambda: so.hard_superpixels(q, 2, return_counts=no),
        ),
        ("SuperpixelClassifier.validate", "validate", lambda: so.SuperpixelClassifier(2, 3, validate=no)),
        (
            "superpixel_cam.return_superpixel_scores",
            "return_superpixel_scores",
            lambda: so.superpixel_cam(x, sp, weight=torch.ones(3, 2), return_superpixel_scores=no),
        ),
        (
            "SuperpixelClassifier.cam.return_superpixel_scores",
            "return_superpixel_scores",
            lambda: so.SuperpixelClassifier(2, 3).cam(x, sp, return_superpixel_scores=no),
        ),
        (
            "SuperpixelAssignment.to_sparse.normalized",
            "normalized",
            lambda: so.SuperpixelAssignment(sp, 1).to_sparse(normalized=no),
        ),
    ]


def _bool_parameters() -> set[str]:
    """Every parameter annotated ``bool`` of the public functions, constructors and methods of ``sparse_ops``
    (``"<function>.<param>"``, ``"<Class>.<param>"`` for a constructor, ``"<Class>.<method>.<param>"``)."""
    import sparse_ops as so

    found = set()
    for name in so.__all__:
        obj = getattr(so, name)
        members = [("", obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            members = [
                ("" if m == "__init__" else f".{m}", f)
                for m, f in inspect.getmembers(obj, inspect.isfunction)
                if (m == "__init__" or not m.startswith("_")) and f.__module__.startswith("sparse_ops")
            ]
        for suffix, fn in members:
            for p in inspect.signature(fn).parameters.values():
                if p.annotation in ("bool", bool):
                    found.add(f"{name}{suffix}.{p.name}")
    return found


def test_every_bool_parameter_is_checked_by_a_test() -> None:
    """The flag table above and the ``validate`` tests cover every ``bool`` parameter of the public API (a
    flag added later without ``check_bool`` and a test fails here: two were missed once)."""
    covered = {case[0] for case in _flag_calls()}
    covered |= {f"{name}.validate" for name in _functions_with_validate()} | {"SuperpixelAssignment.validate"}
    found = _bool_parameters()
    assert len(found) > 30 and "superpixel_cam.return_superpixel_scores" in found  # the search works
    assert found <= covered, f"flags without a test: {sorted(found - covered)}"


@pytest.mark.parametrize("name, flag, call", _flag_calls(), ids=[c[0] for c in _flag_calls()])
def test_flags_must_be_bools_not_truthy_values(name: str, flag: str, call) -> None:
    """A flag given as a string (e.g. ``"False"`` from a config file) is refused, naming the flag and the
    value, instead of being read as ``True`` (``bool("False")``): ``MaxPoolWithIndices(ceil_mode="False")``
    pooled a 5 x 5 map to 3 x 3 while ``max_pool2d_with_indices`` raised PyTorch's own error."""
    with pytest.raises(TypeError, match=rf"^{flag} must be a bool, got str 'False'$"):
        call()


def _functions_with_validate() -> list[str]:
    import sparse_ops as so

    return sorted(
        name
        for name in so.__all__
        if inspect.isfunction(getattr(so, name))
        and "validate" in inspect.signature(getattr(so, name)).parameters
    )


@pytest.mark.parametrize("name", _functions_with_validate())
@pytest.mark.parametrize("value", ["False", None, 0])
def test_every_function_refuses_a_non_bool_validate(name: str, value: object) -> None:
    """``validate`` is read first, before any input (every required argument here is ``None``): a string
    ``"False"`` ran the checks and ``None`` or ``0`` skipped them silently."""
    import sparse_ops as so

    fn = getattr(so, name)
    params = inspect.signature(fn).parameters.values()
    required = [p for p in params if p.default is inspect.Parameter.empty]
    args = [None for p in required if p.kind is p.POSITIONAL_OR_KEYWORD]
    kwargs = {p.name: None for p in required if p.kind is p.KEYWORD_ONLY}
    with pytest.raises(TypeError, match=rf"^validate must be a bool, got {type(value).__name__}"):
        fn(*args, **kwargs, validate=value)


def test_the_functions_with_validate_are_all_found() -> None:
    """The enumeration above sees every public op that takes ``validate`` (it cannot pass vacuously)."""
    assert {"uniformize", "superpixel_pool", "soft_uniformize", "spixel_loss", "max_unpool2d"} <= set(
        _functions_with_validate()
    )
    assert len(_functions_with_validate()) >= 12


def test_assignment_refuses_a_non_bool_validate() -> None:
    import sparse_ops as so

    with pytest.raises(TypeError, match=r"^validate must be a bool, got NoneType None$"):
        so.SuperpixelAssignment(torch.zeros(1, 2, 2, dtype=torch.long), 1, validate=None)  # type: ignore[arg-type]


def test_numpy_bools_are_accepted_as_flags() -> None:
    import sparse_ops as so

    pool = so.MaxPoolWithIndices(2, ceil_mode=np.bool_(True), validate=np.bool_(False))
    assert pool.ceil_mode is True and pool.validate is False
    assert pool(torch.randn(1, 1, 5, 5)).values.shape == (1, 1, 3, 3)
    assert so.SoftUniformize(2, renormalize=np.bool_(False)).renormalize is False
    q = torch.full((1, 9, 4, 4), 1 / 9)
    torch.testing.assert_close(
        so.normalize_assoc(q, 2, renormalize=np.bool_(False)), so.normalize_assoc(q, 2, renormalize=False)
    )


def test_modules_run_on_meta_with_their_value_checks_on() -> None:
    """Shape inference on the meta device (``with torch.device("meta")``) runs every module with its default
    ``validate=True``: a meta tensor holds no values, so the value checks have nothing to read (they raised
    "Tensor.item() cannot be called on meta tensors")."""
    import sparse_ops as so

    with torch.device("meta"):
        x, sp = torch.empty(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
        q = torch.empty(2, 9, 8, 8)
        pooled = so.MaxPoolWithIndices()(x)
        outputs = {
            "SuperpixelPool": so.SuperpixelPool()(x, sp, 5),
            "SuperpixelPool max": so.SuperpixelPool("max")(x, sp, 5),
            "SuperpixelUniformize": so.SuperpixelUniformize()(x, sp, 5),
            "SoftUniformize": so.SoftUniformize(4)(x, q),
            "SpixelLoss": so.SpixelLoss(4, num_classes=3)(q, sp).total,
            "SpixelLoss features": so.SpixelLoss(4)(q, x).total,
            "SuperpixelClassifier": so.SuperpixelClassifier(3, 4)(x[:, :, :4, :4], sp, 5),
            "cam": so.SuperpixelClassifier(3, 4).cam(x, sp, 5),
            "MaxUnpool": so.MaxUnpool()(pooled),
            "superpixel_unpool": so.superpixel_unpool(torch.empty(2, 5, 3), sp),
            "hard_superpixels": so.hard_superpixels(q, 4),
        }
    shapes = {
        "SuperpixelPool": (2, 5, 3),
        "SuperpixelPool max": (2, 5, 3),
        "SuperpixelUniformize": (2, 3, 8, 8),
        "SoftUniformize": (2, 3, 8, 8),
        "SpixelLoss": (),
        "SpixelLoss features": (),
        "SuperpixelClassifier": (2, 4),
        "cam": (2, 4, 8, 8),
        "MaxUnpool": (2, 3, 8, 8),
        "superpixel_unpool": (2, 3, 8, 8),
        "hard_superpixels": (2, 8, 8),
    }
    for name, out in outputs.items():
        assert out.is_meta and tuple(out.shape) == shapes[name], name


def test_meta_label_maps_need_the_counts_that_cannot_be_inferred() -> None:
    """What is inferred from the values (``num_superpixels=None``, ``num_classes=None``) cannot be on meta:
    the error names the argument to pass instead of PyTorch's "Tensor.item() cannot be called on meta
    tensors"."""
    import sparse_ops as so

    with torch.device("meta"):
        x, sp = torch.empty(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
        with pytest.raises(ValueError, match=r"^num_superpixels must be an int for a label map on the meta"):
            so.uniformize(x, sp)
        with pytest.raises(ValueError, match=r"^num_superpixels must be an int for a label map on the meta"):
            so.SuperpixelAssignment(sp, torch.tensor([3]), validate=False)
        with pytest.raises(ValueError, match=r"^num_classes must be given for a label map on the meta"):
            so.spixel_loss(torch.empty(1, 9, 4, 4), sp, 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: so.hard_superpixels(a, 4),
        lambda a: so.soft_uniformize(torch.randn(2, 3, 8, 8), a, 4),
        lambda a: so.soft_superpixel_pool(torch.randn(2, 3, 8, 8), a, 4),
        lambda a: so.spixel_loss(a, torch.randint(0, 3, (2, 8, 8)), 4),
    ],
    ids=["hard_superpixels", "soft_uniformize", "soft_superpixel_pool", "spixel_loss"],
)
def test_an_association_in_channels_last_order_is_told_how_to_permute(call) -> None:
    """Like features and logits, an association given as [B, H, W, 9] is told to permute (it only said that
    dim 1 must be 9); a channels_last-format tensor keeps the [B, 9, H, W] order and works."""
    a = torch.rand(2, 8, 8, 9)
    with pytest.raises(
        ValueError, match=r"got shape \(2, 8, 8, 9\); if assoc is \[B, H, W, 9\].*permute\(0, 3, 1, 2\)"
    ):
        call(a)
    call(a.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"got shape \(2, 8, 8, 8\)$"):  # no hint where it does not fit
        call(torch.rand(2, 8, 8, 8))


def test_features_passed_as_the_label_map_are_named_as_such() -> None:
    """A floating ``[B, C, H, W]`` tensor where the label map goes (the arguments swapped, or logits given to
    ``SuperpixelAssignment``) is told to pass the label map, not to convert the features with ``.long()``."""
    import sparse_ops as so

    logits = torch.randn(2, 21, 4, 4)
    with pytest.raises(
        TypeError, match=r"floating tensor of shape \(2, 21, 4, 4\) \(features or logits"
    ) as info:
        so.SuperpixelAssignment(logits, 5)
    assert ".long()" not in str(info.value)
    with pytest.raises(TypeError, match=r"convert with superpixels\.long\(\)"):  # a resized label map
        so.SuperpixelAssignment(torch.zeros(2, 1, 4, 4), 5)


def test_two_channel_features_passed_as_the_label_map_are_named_as_such() -> None:
    """Two channels (binary logits, a flow field) are features too: the hint holds from ``C = 2`` on."""
    with pytest.raises(TypeError, match=r"floating tensor of shape \(1, 2, 4, 4\) \(features or logits"):
        so.SuperpixelAssignment(torch.zeros(1, 2, 4, 4), 5)


def test_an_infinite_association_is_refused_with_its_index() -> None:
    """``+inf`` is no valid association weight (only negative values and NaN were tested)."""
    q = torch.full((1, 9, 4, 4), 1 / 9)
    q[0, 5, 2, 1] = float("inf")
    with pytest.raises(
        ValueError, match=r"assoc must be non-negative and finite .* got inf at index \[0, 5, 2, 1\]"
    ):
        so.soft_uniformize(torch.ones(1, 2, 4, 4), q, 2)


def test_a_mask_with_a_channel_dim_is_the_same_mask() -> None:
    """``mask[B, 1, H, W]`` is accepted as ``[B, H, W]`` (the documented shapes), with the same result."""
    g = torch.Generator().manual_seed(0)
    x, sp = torch.randn(2, 3, 4, 5, generator=g), torch.randint(0, 6, (2, 4, 5), generator=g)
    mask = torch.rand(2, 4, 5, generator=g) > 0.3
    torch.testing.assert_close(
        uniformize(x, sp, mask=mask[:, None]), uniformize(x, sp, mask=mask), rtol=0, atol=0
    )


def test_a_batch_mismatch_gets_no_resize_hint() -> None:
    """The nearest-interpolation hint is for a label map of another H, W; not for another batch size."""
    with pytest.raises(ValueError, match=r"superpixels must have shape \[B, H, W\] = \[2, 4, 4\]") as info:
        uniformize(torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long))
    assert "interpolate" not in str(info.value)


def test_max_unpool_with_swapped_arguments_says_values_come_first() -> None:
    import sparse_ops as so

    pooled = so.max_pool2d_with_indices(torch.randn(1, 2, 4, 4), 2)
    with pytest.raises(
        TypeError, match=r"got dtype torch\.float32 \(the values come first, then the indices\)"
    ):
        so.max_unpool2d(pooled.indices, pooled.values, (4, 4))
    with pytest.raises(TypeError, match=r"got dtype torch\.int32$"):  # no hint where nothing is swapped
        so.max_unpool2d(pooled.values, pooled.indices.int(), (4, 4))
    with pytest.raises(TypeError, match=r"got dtype torch\.float32$"):  # floating indices after float values
        so.max_unpool2d(pooled.values, pooled.indices.float(), (4, 4))


def test_a_bad_association_that_requires_grad_gets_the_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network's association requires grad: its bad value is reported without ``float()`` of a tensor that
    requires grad, for which PyTorch warns "Converting a tensor with requires_grad=True to a scalar" (an error
    under -W error, which hid the ValueError). PyTorch warns once per process: the test watches the call."""
    float_of = torch.Tensor.__float__

    def no_grad_floats(t: torch.Tensor) -> float:
        assert not t.requires_grad, "float() of a tensor that requires grad"
        return float_of(t)

    monkeypatch.setattr(torch.Tensor, "__float__", no_grad_floats)
    q = torch.full((1, 9, 4, 4), 1 / 9)
    q[0, 3, 1, 2] = -0.5
    with pytest.raises(
        ValueError, match=r"assoc must be non-negative and finite .* got -0.5 at index \[0, 3, 1, 2\]"
    ):
        so.soft_uniformize(torch.ones(1, 2, 4, 4), q.requires_grad_(), 2)


def test_float8_inputs_are_refused_naming_the_argument() -> None:
    """float8 tensors are floating but PyTorch has no scatter / gather / arange kernels for them: they reached
    a NotImplementedError ('"scatter_gather_tensor_cpu" not implemented for 'Float8_e4m3fn'') deep inside."""
    f8 = torch.float8_e4m3fn
    x, sp = torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    q = torch.full((1, 9, 2, 2), 1 / 9)
    calls = [
        ("logits", lambda: uniformize(x.to(f8), sp)),
        ("features", lambda: superpixel_pool(x.to(f8), sp)),
        ("pooled", lambda: superpixel_unpool(torch.randn(1, 1, 2).to(f8), sp)),
        ("logits", lambda: so.soft_uniformize(x.to(f8), q, 2)),
        ("assoc", lambda: so.soft_uniformize(x, q.to(f8), 2)),
        ("x", lambda: so.max_pool2d_with_indices(x.to(f8))),
    ]
    for name, call in calls:
        with pytest.raises(
            TypeError, match=rf"{name} must be a floating tensor \(float16/bfloat16/float32/float64"
        ):
            call()
    with pytest.raises(
        TypeError, match=r"dtype must be a floating dtype \(float16/bfloat16/float32/float64\)"
    ):
        so.pixel_xy(2, 2, dtype=f8)
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype with normalized=True \(float16/"):
        SuperpixelAssignment(sp).to_sparse(normalized=True, dtype=f8)


def test_to_sparse_refuses_a_dtype_that_is_no_torch_dtype() -> None:
    """Before: PyTorch's "ones(): argument 'dtype' must be torch.dtype, not str"."""
    with pytest.raises(TypeError, match=r"dtype must be a torch.dtype \(e.g. torch.float32\), got 'float32'"):
        SuperpixelAssignment(torch.zeros(1, 2, 2, dtype=torch.long)).to_sparse(dtype="float32")


def test_counts_beyond_int64_or_on_meta_are_refused_naming_the_argument() -> None:
    """A 0-dim uint64 count above 2**63 - 1 got PyTorch's overflow error (the [B] form was handled); a [B]
    count tensor on the meta device got "Cannot copy out of meta tensor" (with validate=False too)."""
    x, sp = torch.randn(2, 1, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_superpixels must fit int64 .*got uint64 18446744073709551615"):
        superpixel_pool(x, sp, torch.tensor(2**64 - 1, dtype=torch.uint64))
    with pytest.raises(ValueError, match=r"cell_size must fit int64 .*got uint64 9223372036854775808"):
        so.soft_uniformize(x, torch.ones(2, 9, 2, 2), torch.tensor(2**63, dtype=torch.uint64))
    for validate in (True, False):
        with pytest.raises(
            ValueError, match=r"num_superpixels must be a Tensor with values .* on the meta device"
        ):
            superpixel_pool(x, sp, torch.tensor([1, 1], device="meta"), validate=validate)


def test_classifier_parameters_on_another_device_are_refused() -> None:
    """A classifier left on the meta device (deferred initialisation without ``to_empty``) gave uninitialised
    memory as CAM and logits: ``F.linear`` with meta weights returns an empty tensor on the features'
    device."""
    x, sp = torch.randn(1, 2, 2, 3), torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    message = r"weight must be on the same device as features \(cpu\), got meta"
    with pytest.raises(ValueError, match=message):
        so.superpixel_cam(x, sp, weight=torch.randn(3, 2, device="meta"))
    with pytest.raises(ValueError, match=r"bias must be on the same device as features \(cpu\), got meta"):
        so.superpixel_cam(x, sp, weight=torch.randn(3, 2), bias=torch.randn(3, device="meta"))
    with torch.device("meta"):
        head = so.SuperpixelClassifier(2, 3, bias=False)
    for call in (head, head.cam):
        with pytest.raises(ValueError, match=message):
            call(x, sp)


_X = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))  # not the global RNG at import
_SP = torch.tensor([[[0, 0, 1], [1, 2, 2], [2, 2, 2]]])
_POOLED = so.max_pool2d_with_indices(_X)
_SPARSE_INPUTS = [  # (argument, call with that argument made sparse)
    ("logits", lambda f: uniformize(f(_X), _SP)),
    ("superpixels", lambda f: uniformize(_X, f(_SP))),
    ("mask", lambda f: uniformize(_X, _SP, mask=f(_SP > 0))),
    ("num_superpixels", lambda f: uniformize(_X, _SP, f(torch.tensor([3])))),
    ("features", lambda f: superpixel_pool(f(_X), _SP)),
    ("superpixels", lambda f: superpixel_pool(_X, f(_SP), reduce="max")),
    ("pooled", lambda f: superpixel_unpool(f(torch.randn(1, 3, 2)), _SP)),
    ("superpixels", lambda f: so.relabel_contiguous(f(_SP))),
    ("superpixels", lambda f: SuperpixelAssignment(f(_SP))),
    ("x", lambda f: SuperpixelAssignment(_SP).pool(f(_X))),  # (the method's argument)
    ("assoc", lambda f: so.soft_uniformize(torch.randn(1, 2, 4, 4), f(torch.rand(1, 9, 4, 4)), 2)),
    ("bias", lambda f: so.superpixel_cam(_X, _SP, weight=torch.ones(3, 2), bias=f(torch.ones(3)))),
    ("x", lambda f: so.max_pool2d_with_indices(f(_X))),
    ("values", lambda f: so.max_unpool2d(f(_POOLED.values), _POOLED.indices, _POOLED.input_size)),
    ("indices", lambda f: so.max_unpool2d(_POOLED.values, f(_POOLED.indices), _POOLED.input_size)),
]


@pytest.mark.parametrize(
    "argument, call", _SPARSE_INPUTS, ids=[f"{i}-{a}" for i, (a, _) in enumerate(_SPARSE_INPUTS)]
)
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_a_sparse_tensor_argument_is_refused_by_name(argument: str, call, layout: str) -> None:
    """A sparse tensor failed inside PyTorch ("reshape is not implemented for sparse tensors", or a missing
    SparseCPU kernel), naming no argument; it is refused as transparent_init refuses one."""
    call(lambda t: t)  # the dense call runs

    def sparse(t: torch.Tensor) -> torch.Tensor:
        return t.to_sparse() if layout == "coo" or t.dim() < 2 else t.to_sparse_csr(dense_dim=t.dim() - 2)

    with pytest.raises(TypeError, match=rf"^{argument} must be a dense tensor, got layout torch\.sparse_"):
        call(sparse)


def test_uint64_ids_beyond_int64_are_refused_with_the_largest_one() -> None:
    """The message named no value (the count's message did)."""
    sp = torch.tensor([[[-(2**63), 0], [-1, 0]]]).view(torch.uint64)  # 2**63 and 2**64 - 1
    with pytest.raises(ValueError, match=r"do not fit int64 \(the largest: 18446744073709551615\)"):
        uniformize(torch.randn(1, 1, 2, 2), sp)


def test_a_count_tensor_of_two_dimensions_is_a_shape_error() -> None:
    """A ``[B, 1]`` count tensor was a TypeError, a ``[B + 1]`` one a ValueError: both are shapes."""
    x, sp = torch.randn(2, 1, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long)
    for counts in (torch.tensor([[5], [5]]), torch.tensor([5, 5, 5])):
        with pytest.raises(ValueError, match=r"Tensor of shape \[B\] = \[2\], got shape"):
            uniformize(x, sp, counts)


@pytest.mark.parametrize("value", [np.array(["mean", "sum"]), np.array(["max"]), ["mean"], 3])
def test_a_string_option_of_another_type_is_a_type_error(value: object) -> None:
    """A numpy array of two strings raised numpy's "truth value of an array ... is ambiguous" and one of one
    string (``np.array(["max"])``) was taken as that string."""
    with pytest.raises(TypeError, match=r"reduce must be one of \('mean', 'sum', 'max'\), got"):
        superpixel_pool(torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), reduce=value)


@pytest.mark.parametrize(
    "dtype", [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.complex32, torch.qint8]
)
def test_to_sparse_refuses_a_value_dtype_sparse_tensors_lack(dtype: torch.dtype) -> None:
    """These gave PyTorch's "coalesce not implemented for 'UInt64'" (or, for qint8, an internal assert)."""
    a = SuperpixelAssignment(torch.randint(0, 5, (2, 4, 4), generator=torch.Generator().manual_seed(0)), 5)
    for layout in (torch.sparse_coo, torch.sparse_csr):
        with pytest.raises(TypeError, match=rf"dtype must be one of torch.bool, .*got {dtype}$"):
            a.to_sparse(layout, dtype=dtype)


def test_to_sparse_follows_the_default_dtype_and_refuses_a_layout_of_another_type_with_a_type_error() -> None:
    """``to_sparse`` made float32 whatever ``torch.set_default_dtype`` said, where the package's other
    factories (``pixel_xy``, the transparent stacks) follow it; and ``layout='coo'`` (a string) was a
    ``ValueError`` where a wrong type is a ``TypeError`` everywhere else (``dtype='float32'`` included)."""
    a = SuperpixelAssignment(torch.tensor([[[0, 1], [1, 1]]]))
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        assert a.to_sparse().dtype == torch.float64 == a.to_sparse(normalized=True).dtype
    finally:
        torch.set_default_dtype(before)
    assert a.to_sparse().dtype == torch.float32 and a.to_sparse(dtype=torch.int64).dtype == torch.int64
    said = r"layout must be torch\.sparse_coo or torch\.sparse_csr, got "
    with pytest.raises(TypeError, match=said + "'coo'"):
        a.to_sparse("coo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=said + r"torch\.strided"):
        a.to_sparse(torch.strided)


def test_a_one_element_pair_is_a_type_error_naming_the_argument() -> None:
    """``kernel_size=(2,)`` is no int and no pair: a TypeError naming the argument and the value (not Python's
    "not enough values to unpack"); an empty tuple likewise."""
    with pytest.raises(TypeError, match=r"^kernel_size must be an int or a pair of ints, got \(2,\)$"):
        so.max_pool2d_with_indices(torch.randn(1, 1, 4, 4), (2,))
    with pytest.raises(TypeError, match=r"^k must be an int or a pair of ints, got \(\)$"):
        _checks.check_pair((), "k", 1)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_tensor_argument_is_refused_by_name() -> None:
    """A nested tensor has layout ``torch.strided`` (the sparse-layout test passes it): it is refused by its
    own check, naming the argument."""
    nested = torch.nested.nested_tensor([torch.randn(2, 3, 3), torch.randn(2, 3, 3)])
    assert nested.layout == torch.strided
    with pytest.raises(TypeError, match=r"^logits must be a dense tensor, got a nested tensor$"):
        uniformize(nested, torch.zeros(2, 3, 3, dtype=torch.long))


def test_per_image_id_errors_name_the_first_image_and_its_own_largest_id() -> None:
    """With per-image counts, an id equal to its image's count is out of range; the message names the first
    image out of range, its count and its own largest id (not the batch's)."""
    x = torch.randn(2, 1, 2, 2)
    sp = torch.tensor([[[0, 3], [1, 2]], [[0, 5], [1, 1]]])
    with pytest.raises(ValueError, match=r"ids of image 0 must be < num_superpixels\[0\] = 3, got the id 3$"):
        superpixel_pool(x, sp, torch.tensor([3, 6]))
    with pytest.raises(ValueError, match=r"ids of image 0 must be < num_superpixels\[0\] = 2, got the id 3$"):
        superpixel_pool(x, sp, torch.tensor([2, 2]))
    assert superpixel_pool(x, sp, torch.tensor([4, 6])).shape == (2, 6, 1)


def test_an_id_above_an_int_bound_names_the_bound_to_pass() -> None:
    """The advice names ``max id + 1``, the smallest ``num_superpixels`` that takes the ids."""
    sp = torch.tensor([[[0, 6], [1, 2]]])
    said = r"ids must be < num_superpixels = 5, got the id 6; pass a larger num_superpixels \(max id \+ 1 = 7"
    with pytest.raises(ValueError, match=said):
        uniformize(torch.randn(1, 1, 2, 2), sp, 5)


def test_an_empty_dim_counts_as_one_in_the_strides_of_a_size_check() -> None:
    """``check_tensor_size``: the strides of a contiguous tensor count an empty dim as 1 (PyTorch's rule), so
    a map with no elements can still be one no tensor can hold (``max_unpool2d`` of values without channels
    to an output of 2**32 x 2**32: a stride of 2**64 elements)."""
    with pytest.raises(ValueError, match=r"a stride of 18446744073709551616 elements along dimension 0"):
        _checks.check_tensor_size("what", (2, 0, 2**32, 2**32), torch.bool)
    values, indices = torch.zeros(1, 0, 2, 2), torch.zeros(1, 0, 2, 2, dtype=torch.long)  # no channels
    assert so.max_unpool2d(values, indices, (4, 4)).shape == (1, 0, 4, 4)
    with pytest.raises(
        ValueError, match=r"^output_size \(4294967296, 4294967296\) is too large.*a stride of"
    ):
        so.max_unpool2d(values, indices, (2**32, 2**32))


def test_a_batch_mismatch_shows_the_label_map_as_given() -> None:
    """A ``[B, 1, H, W]`` label map of another batch size is shown with its channel dim, as it was passed."""
    said = r"^superpixels must have the batch size of features \(2\), got shape \(3, 1, 4, 4\)$"
    with pytest.raises(ValueError, match=said):
        superpixel_pool(torch.randn(2, 3, 4, 4), torch.zeros(3, 1, 4, 4, dtype=torch.long))


def test_a_bool_tensor_as_features_gets_no_label_map_swap_hint() -> None:
    """check_floating: only an *integer* tensor before a label map may be a label map passed first; a bool
    tensor (a mask) is not, so its message ends at the conversion advice."""
    sp = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=r"got dtype torch.bool; convert it with features.float\(\)$"):
        so.superpixel_pool(sp[:, None].bool(), sp)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_to_sparse_normalized_takes_every_floating_dtype(dtype: torch.dtype) -> None:
    """to_sparse(normalized=True) needs a floating dtype: float16/bfloat16/float32/float64 all qualify."""
    sp = torch.zeros(1, 3, 3, dtype=torch.long)
    out = SuperpixelAssignment(sp).to_sparse(dtype=dtype, normalized=True)
    assert out.dtype == dtype
    assert float(out.to_dense().sum()) == 1.0


def test_an_integer_mask_is_refused_naming_its_dtype() -> None:
    """A mask is a bool tensor (True = the pixel counts): a 0/1 uint8 mask is a TypeError, not read as
    bools."""
    sp = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=r"mask must have dtype torch.bool .*got torch.uint8"):
        SuperpixelAssignment(sp, mask=torch.ones(1, 3, 3, dtype=torch.uint8))


def test_a_channel_dim_mask_of_the_wrong_size_is_shown_as_given() -> None:
    """The shape error of a [B, 1, H, W] mask shows the mask as it was passed (the actual value)."""
    sp = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"like superpixels, got \[1, 1, 2, 2\]$"):
        SuperpixelAssignment(sp, mask=torch.ones(1, 1, 2, 2, dtype=torch.bool))


def test_a_bool_count_tensor_is_refused_naming_its_dtype() -> None:
    """num_superpixels as a Tensor[B] needs an integer dtype: a bool tensor is a TypeError."""
    sp = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=r"num_superpixels must have an integer dtype, got torch.bool"):
        SuperpixelAssignment(sp, num_superpixels=torch.tensor([True]))


def test_zero_superpixel_slots_are_a_valid_count() -> None:
    """num_superpixels is a non-negative int: 0 is accepted (images without pixels have no superpixels)."""
    assert _checks.check_num_superpixels(0, 2) == 0
    assignment = SuperpixelAssignment(torch.zeros(1, 0, 0, dtype=torch.long), num_superpixels=0)
    assert assignment.num_superpixels == 0


def test_per_image_id_errors_name_a_later_image_when_only_it_is_out_of_range() -> None:
    """With per-image counts the message names the first image out of range, which need not be image 0."""
    sp = torch.zeros(2, 3, 3, dtype=torch.long)
    sp[1, 0, 0] = 2
    with pytest.raises(ValueError, match=r"ids of image 1 must be < num_superpixels\[1\] = 1, got the id 2$"):
        SuperpixelAssignment(sp, num_superpixels=torch.tensor([5, 1]))


@pytest.mark.parametrize("channels", [8, 10])
def test_an_association_needs_exactly_nine_channels(channels: int) -> None:
    """assoc is [B, 9, H, W], one channel per candidate cell: fewer or more channels are a shape error."""
    q = torch.full((1, channels, 3, 3), 1 / channels)
    with pytest.raises(
        ValueError, match=rf"assoc must have 9 channels \(dim 1\).*got shape \(1, {channels}, 3, 3\)"
    ):
        so.soft_uniformize(torch.randn(1, 2, 3, 3), q, 2)
