"""The per-call overhead of the ops that does not show in their results: host-device synchronisations and the
temporaries of the value checks.

On CUDA every value read on the host (``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``, ``nonzero``, ...)
waits for all queued work. The counts are deterministic (``benchmarks/_counting.py`` counts them as aten ops),
so these tests assert upper bounds, never times: with ``validate=False`` the main ops read nothing on the
host, forward and backward; with ``validate=True`` the value checks read once per checked input.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sparse_ops as so

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
try:
    from _counting import OpCounter, allocations
finally:
    sys.path.pop(0)


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    return {
        "x": x,
        "sp": torch.randint(0, 4, (2, 8, 8), generator=g),
        "mask": torch.rand(2, 8, 8, generator=g) > 0.3,
        "assoc": torch.softmax(torch.randn(2, 9, 8, 8, generator=g), 1).requires_grad_(),
        "pooled": torch.randn(2, 4, 3, generator=g, requires_grad=True),
        "target": torch.randint(0, 3, (2, 8, 8), generator=g),
        "values": torch.randn(2, 3, 4, 4, generator=g, requires_grad=True),
    }


Call = Callable[[dict[str, torch.Tensor], bool], object]

#: (name, call of the inputs and validate, most syncs with validate=True); validate=False: none at all.
CALLS: list[tuple[str, Call, int]] = [
    ("uniformize", lambda i, v: so.uniformize(i["x"], i["sp"], 4, mask=i["mask"], validate=v), 1),
    ("pool sum", lambda i, v: so.superpixel_pool(i["x"], i["sp"], 4, reduce="sum", validate=v), 1),
    ("pool mean", lambda i, v: so.superpixel_pool(i["x"], i["sp"], 4, mask=i["mask"], validate=v), 1),
    ("pool max", lambda i, v: so.superpixel_pool(i["x"], i["sp"], 4, reduce="max", validate=v), 1),
    ("unpool", lambda i, v: so.superpixel_unpool(i["pooled"], i["sp"], validate=v), 1),
    ("assignment", lambda i, v: so.SuperpixelAssignment(i["sp"], 4, validate=v).encode(i["x"]), 1),
    ("soft pool", lambda i, v: so.soft_superpixel_pool(i["x"], i["assoc"], 4, validate=v), 1),
    (
        "soft unpool",
        lambda i, v: so.soft_superpixel_unpool(i["x"][:, :, :2, :2], i["assoc"], 4, validate=v),
        1,
    ),
    (
        "soft uniformize",
        lambda i, v: so.soft_uniformize(i["x"], i["assoc"], 4, mask=i["mask"], validate=v),
        1,
    ),
    ("normalize_assoc", lambda i, v: so.normalize_assoc(i["assoc"], 4, validate=v), 1),
    ("hard_superpixels", lambda i, v: so.hard_superpixels(i["assoc"], 4, validate=v), 1),
    (  # the association's values, then the labels' range
        "spixel_loss",
        lambda i, v: so.spixel_loss(i["assoc"], i["target"], 4, num_classes=3, validate=v).total,
        2,
    ),
    ("relabel_contiguous", lambda i, v: so.relabel_contiguous(i["sp"], validate=v), 0),
    (
        "max_unpool2d",
        lambda i, v: so.max_unpool2d(
            i["values"], torch.zeros(2, 3, 4, 4, dtype=torch.long), (8, 8), validate=v
        ),
        1,
    ),
]


def _syncs(call: Call, validate: bool) -> dict[str, int]:
    """The host-device syncs of one call and of the backward of its output, by op name."""
    inputs = _inputs()
    with OpCounter().active() as counter:
        out = call(inputs, validate)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.backward(torch.ones_like(out))
    return dict(counter.sync_names)


@pytest.mark.parametrize("name, call, _", CALLS, ids=[c[0] for c in CALLS])
def test_validate_false_reads_nothing_on_the_host(name: str, call: Call, _: int) -> None:
    assert _syncs(call, validate=False) == {}


@pytest.mark.parametrize("name, call, most", CALLS, ids=[c[0] for c in CALLS])
def test_validate_true_reads_each_checked_input_once(name: str, call: Call, most: int) -> None:
    """One read per checked input: both bounds of an id range come from one ``aminmax`` (two reads were two
    stalls on CUDA)."""
    syncs = _syncs(call, validate=True)
    assert sum(syncs.values()) <= most, syncs


def test_a_count_tensor_costs_one_read_and_its_check_one_more() -> None:
    """``num_superpixels`` as a per-image tensor: its bounds are read once (documented: one synchronisation),
    and with ``validate=False`` nothing else is read; the id range check against it reads once more (the
    counts' sign, the ids' minimum and any id above its image's count: three reads before)."""
    call: Call = lambda i, v: so.uniformize(i["x"], i["sp"], torch.tensor([4, 4]), validate=v)  # noqa: E731
    assert _syncs(call, validate=False) == {"Tensor.tolist": 1}
    assert _syncs(call, validate=True) == {"Tensor.tolist": 2}


@pytest.mark.parametrize(
    "counts, ids, message",
    [
        ([4, -1], None, r"num_superpixels must be >= 0, got \[4, -1\]"),
        ([4, 4], lambda sp: sp - 1, "superpixels ids must be >= 0, got the id -1"),
        ([4, 3], None, r"ids of image 1 must be < num_superpixels\[1\] = 3, got the id 3"),
        ([4, -1], lambda sp: sp[:, :0], r"num_superpixels must be >= 0, got \[4, -1\]"),  # no ids at all
        ([4, -1], lambda sp: sp.to(torch.uint16), r"num_superpixels must be >= 0, got \[4, -1\]"),
    ],
)
def test_the_per_image_check_reports_the_first_problem(counts, ids, message) -> None:
    """The one read of the per-image check keeps the order of its errors: the counts, the ids' lower bound,
    then the first image with an id above its count."""
    sp = torch.tensor([[[0, 1], [2, 3]], [[0, 1], [2, 3]]])
    sp = sp if ids is None else ids(sp)
    with pytest.raises(ValueError, match=message):
        so.SuperpixelAssignment(sp, torch.tensor(counts))


def test_the_counter_sees_a_sync() -> None:
    """The tests above can fail: an added ``.item()`` is counted."""

    def with_item(i: dict[str, torch.Tensor], v: bool) -> object:
        out = so.uniformize(i["x"], i["sp"], 4, validate=v)
        float(out.detach().sum())
        return out

    assert _syncs(with_item, validate=False) == {"aten._local_scalar_dense": 1}


class _FullSize(TorchDispatchMode):
    """Counts the ops whose output has ``numel`` elements (temporaries the size of the checked tensor); a view
    of an input (``detach``, ``view``: no memory of its own) is not a temporary."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        if (
            isinstance(out, torch.Tensor)
            and out.numel() == self.numel
            and out.untyped_storage().data_ptr() not in inputs
        ):
            self.count += 1
        return out


@pytest.mark.parametrize("op", [so.normalize_assoc, so.hard_superpixels], ids=lambda f: f.__name__)
def test_the_association_check_makes_no_temporary_of_its_size(op) -> None:
    """``validate=True`` adds one reduction over the association, not a mask of bad entries (that took seven
    temporaries of the association's size: isfinite's three, ``~``, ``< 0``, ``|`` and ``any``'s input; the
    NaN check of hard_superpixels one)."""
    assoc = torch.softmax(torch.randn(2, 9, 8, 8), 1)
    counts = {}
    for validate in (False, True):
        with _FullSize(assoc.numel()) as mode:
            op(assoc, 4, validate=validate)
        counts[validate] = mode.count
    assert counts[True] == counts[False]


@pytest.mark.parametrize(
    "value, where",
    [
        (float("nan"), [1, 2, 3, 4]),
        (float("inf"), [0, 8, 7, 7]),
        (-float("inf"), [1, 0, 0, 1]),
        (-0.5, [0, 4, 2, 0]),
    ],
)
def test_the_association_check_refuses_every_bad_value(value: float, where: list[int]) -> None:
    """NaN, +-inf and negative weights are refused with their first index; -0.0 is accepted (it is >= 0)."""
    assoc = torch.softmax(torch.randn(2, 9, 8, 8), 1)
    assoc[tuple(where)] = value
    with pytest.raises(
        ValueError, match=re.escape(f"finite (e.g. a softmax over dim 1), got {value} at index {where}")
    ):
        so.normalize_assoc(assoc, 4)
    assoc[tuple(where)] = -0.0
    so.normalize_assoc(assoc, 4)


def test_hard_superpixels_allocates_the_labels_the_maximum_and_a_flag_per_candidate() -> None:
    """The running arg-max keeps its maximum and labels in place; an out-of-image candidate is left out by its
    validity, not by a copy of its scores filled with ``-inf``. Per pixel of the batch (the growth from 2 to 4
    images): the int64 label, the float32 maximum and 8 one-byte flags, 20 bytes (it was 144: a masked
    copy of the scores and two new tensors per candidate)."""
    h, w = 32, 32
    allocated = {}
    for b in (2, 4):
        assoc = torch.softmax(torch.randn(b, 9, h, w), 1)
        allocated[b] = allocations(lambda: so.hard_superpixels(assoc, 4, validate=False)).total_bytes  # noqa: B023
    assert (allocated[4] - allocated[2]) / (2 * h * w) < 8 + 4 + 8 * 1 + 1, allocated  # + a few bytes


@pytest.mark.parametrize("seed", range(4))
def test_hard_superpixels_of_any_values_matches_the_loop_reference(seed: int) -> None:
    """Infinities and NaN (not validated) included: the strict ``>`` in tie order over in-image candidates,
    exactly as the loop reference; the association is left as it was."""
    from tests.sparse_ops.test_hard import ref_hard

    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([float("-inf"), -1.0, 0.0, 1.0, float("inf"), float("nan")])
    assoc = levels[torch.randint(0, 6, (2, 9, 7, 10), generator=g)]
    before = assoc.clone()
    out = so.hard_superpixels(assoc, 3, validate=False)
    assert torch.equal(out, ref_hard(assoc, 3))
    assert torch.equal(assoc.nan_to_num(), before.nan_to_num()) and torch.equal(assoc.isnan(), before.isnan())
