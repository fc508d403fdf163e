"""SuperpixelAssignment: counts, encode/decode, to_sparse, backends, no aliasing, refusal of absurd N_s."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import sparse_ops._kernels as kernels
from sparse_ops import AUTO_BACKEND, SuperpixelAssignment
from tests.sparse_ops._reference import ref_pool, ref_uniformize, ref_unpool


def test_counts_encode_decode_against_references() -> None:
    g = torch.Generator().manual_seed(0)
    sp = torch.randint(0, 5, (2, 4, 6), generator=g)
    mask = torch.rand(2, 4, 6, generator=g) > 0.3
    x = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64)
    a = SuperpixelAssignment(sp, 7, mask=mask)
    means, counts = ref_pool(x.numpy(), sp.numpy(), 7, "mean", mask.numpy())
    assert a.num_superpixels == 7 and a.counts.dtype == torch.long
    np.testing.assert_array_equal(a.counts.numpy(), counts)
    np.testing.assert_allclose(a.encode(x).numpy(), means, rtol=1e-12)
    np.testing.assert_allclose(
        a.pool(x, "sum").numpy(), ref_pool(x.numpy(), sp.numpy(), 7, "sum", mask.numpy())[0]
    )
    p = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    np.testing.assert_array_equal(a.decode(p).numpy(), ref_unpool(p.numpy(), sp.numpy()))
    np.testing.assert_allclose(a.uniformize(x).numpy(), ref_uniformize(x.numpy(), sp.numpy(), mask.numpy()))
    assert (
        repr(a) == "SuperpixelAssignment(batch_size=2, size=(4, 6), num_superpixels=7, masked=True, "
        "backend='scatter')"
    )


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_decode_of_a_masked_assignment_reads_and_differentiates_every_pixel(backend: str) -> None:
    """The mask decides what counts in the means; the decoder ``D = M^T`` still gives every pixel, masked ones
    included, its superpixel's vector, so its gradient sums the incoming gradient over *all* pixels of each
    superpixel (the adjoint ``M``, not the masked one)."""
    g = torch.Generator().manual_seed(6)
    sp = torch.randint(0, 5, (2, 4, 6), generator=g)
    mask = torch.rand(2, 4, 6, generator=g) > 0.5
    mask[0, 0, 0] = False  # at least one masked pixel
    a = SuperpixelAssignment(sp, 6, mask=mask, backend=backend)  # type: ignore[arg-type]
    p = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out = a.decode(p)
    np.testing.assert_array_equal(out.detach().numpy(), ref_unpool(p.detach().numpy(), sp.numpy()))
    up = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, p, up)
    expected = ref_pool(up.numpy(), sp.numpy(), 6, "sum", None)[0]  # every pixel, the mask ignored
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(a.decode, (p,))


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("masked", [False, True])
def test_to_sparse_matches_the_dense_definition(layout: torch.layout, masked: bool) -> None:
    g = torch.Generator().manual_seed(1)
    sp = torch.randint(0, 5, (2, 3, 4), generator=g)
    mask = torch.rand(2, 3, 4, generator=g) > 0.3 if masked else None
    a = SuperpixelAssignment(sp, 6, mask=mask)
    m = a.to_sparse(layout, dtype=torch.float64)
    assert m.layout == layout and m.shape == (12, 24)
    dense = torch.zeros(12, 24, dtype=torch.float64)
    for b in range(2):
        for p in range(12):
            if mask is None or mask[b].reshape(-1)[p]:
                dense[b * 6 + sp[b].reshape(-1)[p], b * 12 + p] = 1
    torch.testing.assert_close(m.to_dense(), dense)
    x = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)
    e = a.to_sparse(layout, dtype=torch.float64, normalized=True)
    torch.testing.assert_close((e @ x.permute(0, 2, 3, 1).reshape(24, 3)).view(2, 6, 3), a.encode(x))
    # the normalized values are 1 / count rounded once to dtype (not a float32 reciprocal widened to float64)
    dense_e = dense / dense.sum(1, keepdim=True).clamp_min(1)
    torch.testing.assert_close(e.to_dense(), dense_e, rtol=0, atol=0)
    with pytest.raises(ValueError, match="layout must be"):
        a.to_sparse(torch.strided)


def test_auto_backend_is_a_per_device_table() -> None:
    sp = torch.zeros(1, 2, 2, dtype=torch.long)
    assert SuperpixelAssignment(sp).backend == AUTO_BACKEND["cpu"] == "scatter"
    assert AUTO_BACKEND["cuda"] == "scatter"
    assert SuperpixelAssignment(sp, backend="sparse").backend == "sparse"


def test_no_aliasing_of_the_callers_label_map_and_mask() -> None:
    g = torch.Generator().manual_seed(2)
    sp = torch.randint(0, 4, (1, 4, 4), generator=g)
    mask = torch.rand(1, 4, 4, generator=g) > 0.3
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    for backend in ("scatter", "sparse"):
        labels, counted = sp.clone(), mask.clone()
        a = SuperpixelAssignment(labels, 4, mask=counted, backend=backend)
        before = (a.uniformize(x), a.encode(x), a.decode(torch.ones(1, 4, 1, dtype=torch.float64)))
        labels.fill_(3)  # in-place changes of the caller's tensors after construction
        counted.fill_(False)
        after = (a.uniformize(x), a.encode(x), a.decode(torch.ones(1, 4, 1, dtype=torch.float64)))
        for u, v in zip(before, after, strict=True):
            assert torch.equal(u, v)
        assert torch.equal(a.mask, mask)


def test_changing_the_mask_attribute_in_place_leaves_the_assignment_as_built() -> None:
    """``a.mask`` is a copy: writing into it changed the max pooling of an input that requires grad (5 -> 1
    below) and ``to_sparse``, not the counts or the means (the mask the assignment keeps was half changed)."""
    sp = torch.tensor([[[0, 0, 1, 1]]])
    a = SuperpixelAssignment(sp, 2, mask=torch.ones(1, 1, 4, dtype=torch.bool))
    x = torch.tensor([[[[5.0, 1.0, 2.0, 3.0]]]], requires_grad=True)
    before = (a.pool(x, "max"), a.encode(x), a.to_sparse().to_dense())
    mask = a.mask
    assert mask is not None
    mask[0, 0, 0] = False
    after = (a.pool(x, "max"), a.encode(x), a.to_sparse().to_dense())
    for u, v in zip(before, after, strict=True):
        assert torch.equal(u, v)
    assert bool(a.mask.all())  # type: ignore[union-attr]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_methods_return_half_inputs_in_their_dtype_accumulated_in_float32(dtype: torch.dtype) -> None:
    """The methods themselves round the float32 results to the input's dtype (the docstrings' "in ``x``'s
    dtype"; ``superpixel_pool`` casts again, so only a direct call shows it)."""
    g = torch.Generator().manual_seed(7)
    sp = torch.randint(0, 5, (2, 4, 6), generator=g)
    x = (3 * torch.randn(2, 3, 4, 6, generator=g)).to(dtype)
    a = SuperpixelAssignment(sp, 5)
    for reduce in ("mean", "sum", "max"):
        pooled = a.pool(x, reduce)  # type: ignore[arg-type]
        assert pooled.dtype == dtype and pooled.is_contiguous()
        assert torch.equal(pooled, a.pool(x.float(), reduce).to(dtype))  # type: ignore[arg-type]
    assert a.encode(x).dtype == dtype
    assert torch.equal(a.uniformize(x), a.uniformize(x.float()).to(dtype))
    p = torch.randn(2, 5, 3, generator=g).to(dtype)
    assert torch.equal(a.decode(p), a.decode(p.float()).to(dtype))


def test_absurd_num_superpixels_is_refused_before_allocating() -> None:
    sp = torch.zeros(1, 4, 4, dtype=torch.long)
    sp[0, 0, 0] = 2**40  # a stray id
    with pytest.raises(ValueError, match=r"largest id of superpixels is 1099511627776.*relabel_contiguous"):
        SuperpixelAssignment(sp)
    with pytest.raises(ValueError, match=r"num_superpixels = 1000000000000"):
        SuperpixelAssignment(torch.zeros(1, 4, 4, dtype=torch.long), 10**12)
    assert SuperpixelAssignment(torch.zeros(1, 4, 4, dtype=torch.long), 2**16).counts.shape == (1, 2**16)


def test_out_of_range_ids_are_refused_at_construction() -> None:
    sp = torch.tensor([[[0, 1], [2, 5]]])
    with pytest.raises(ValueError, match=r"ids must be < num_superpixels = 3, got the id 5; pass a larger"):
        SuperpixelAssignment(sp, 3)
    with pytest.raises(ValueError, match=r"ids of image 0 must be < num_superpixels\[0\] = 3, got the id 5"):
        SuperpixelAssignment(sp, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"ids must be >= 0, got the id -5"):
        SuperpixelAssignment(-sp, 3)


@pytest.mark.parametrize("validate", [True, False])
def test_a_negative_per_image_count_is_refused_whatever_validate(validate: bool) -> None:
    """The per-image counts are read anyway (for ``N_s``): a count of -1 is refused also unvalidated."""
    sp = torch.zeros(2, 2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_superpixels must be >= 0, got \[1, -1\]"):
        SuperpixelAssignment(sp, torch.tensor([1, -1]), validate=validate)


def test_decode_errors() -> None:
    a = SuperpixelAssignment(torch.randint(0, 6, (2, 4, 5)), 6)
    with pytest.raises(ValueError, match=r"pooled must have shape \[B, N_s, C\] = \[2, 6, C\]"):
        a.decode(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="reduce must be one of"):
        a.pool(torch.zeros(2, 1, 4, 5), "median")  # type: ignore[arg-type]  # the error under test
    with pytest.raises(ValueError, match=r"^x must have shape \[B, C, H, W\] = \[2, C, 4, 5\] like the"):
        a.encode(torch.zeros(2, 1, 5, 4))


@pytest.mark.parametrize("masked", [False, True])
def test_sparse_matrices_follow_the_label_map_under_another_default_device(masked: bool) -> None:
    """The CSR matrices of backend="sparse" and to_sparse() are built on the assignment's device, not on the
    default device (meta here; the same mechanism as torch.set_default_device("cuda") with CPU label maps)."""
    g = torch.Generator().manual_seed(4)
    sp = torch.randint(0, 5, (2, 3, 4), generator=g)
    mask = torch.rand(2, 3, 4, generator=g) > 0.3 if masked else None
    x = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)
    expected = SuperpixelAssignment(sp, 6, mask=mask).uniformize(x)
    with torch.device("meta"):
        a = SuperpixelAssignment(sp, 6, mask=mask, backend="sparse")
        got = a.uniformize(x)
        matrices = [a.to_sparse(layout) for layout in (torch.sparse_coo, torch.sparse_csr)]
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, expected)
    for m in matrices:
        assert m.device.type == "cpu"
        torch.testing.assert_close(m.to_dense(), a.to_sparse().to_dense())


def test_deepcopy_and_pickle_after_sparse_use_rebuild_the_matrices() -> None:
    """The cached CSR matrices (which cannot be deep-copied) are not part of a copy: rebuilt on demand."""
    g = torch.Generator().manual_seed(5)
    sp = torch.randint(0, 4, (2, 3, 5), generator=g)
    mask = torch.rand(2, 3, 5, generator=g) > 0.3
    x = torch.randn(2, 2, 3, 5, generator=g, dtype=torch.float64)
    a = SuperpixelAssignment(sp, 4, mask=mask, backend="sparse")
    expected = a.uniformize(x)
    assert a._csr_cache
    for clone in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert clone._csr_cache == {} and clone.backend == "sparse"
        assert clone.counts is not a.counts and torch.equal(clone.counts, a.counts)
        torch.testing.assert_close(clone.uniformize(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(clone.encode(x), a.encode(x), rtol=0, atol=0)
        assert clone._csr_cache
    assert a._csr_cache  # the original keeps its matrices


def test_torch_save_needs_weights_only_false_or_the_ids() -> None:
    """``torch.save`` of an assignment after sparse use (the docs' claim, and the route across torch versions:
    2.11 and 2.14 read each other's files, by hand): ``torch.load(weights_only=False)`` gives it back without
    the CSR matrices and with the same bits; ``torch.load``'s default ``weights_only=True`` refuses it, naming
    the class; its ids and mask, saved as tensors, load weights-only and rebuild it."""
    g = torch.Generator().manual_seed(6)
    sp = torch.randint(0, 4, (2, 3, 5), generator=g)
    mask = torch.rand(2, 3, 5, generator=g) > 0.3
    x = torch.randn(2, 2, 3, 5, generator=g)
    a = SuperpixelAssignment(sp, 4, mask=mask, backend="sparse")
    expected = a.uniformize(x)
    buffer = io.BytesIO()
    torch.save(a, buffer)
    buffer.seek(0)
    clone = torch.load(buffer, weights_only=False)
    assert clone._csr_cache == {} and clone.backend == "sparse"
    torch.testing.assert_close(clone.uniformize(x), expected, rtol=0, atol=0)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="SuperpixelAssignment"):
        torch.load(buffer, weights_only=True)
    buffer = io.BytesIO()
    torch.save({"superpixels": sp, "mask": mask}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = SuperpixelAssignment(saved["superpixels"], 4, mask=saved["mask"], backend="sparse")
    torch.testing.assert_close(rebuilt.uniformize(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_to_sparse_normalized_needs_a_floating_dtype(dtype: torch.dtype) -> None:
    a = SuperpixelAssignment(torch.randint(0, 3, (1, 4, 4)), 3)
    with pytest.raises(TypeError, match=rf"dtype must be a floating dtype with normalized=True.*got {dtype}"):
        a.to_sparse(dtype=dtype, normalized=True)
    assert a.to_sparse(dtype=dtype).dtype == dtype  # the binary M is fine in any dtype


def test_the_csr_builds_silence_the_beta_warning_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSR builds hide PyTorch's two sparse-matrix warnings (beta state; invariant checks implicitly
    disabled, torch 2.11), and no other ``UserWarning`` raised inside them (a user's warning filter turned to
    errors still sees those). (As the first build of a process: later builds install no filter.)"""
    monkeypatch.setattr(kernels, "_quieted", threading.Event())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with kernels.quiet_sparse_beta():
            warnings.warn(
                "Sparse CSR tensor support is in beta state. If you miss ...", UserWarning, stacklevel=1
            )
            invariants = "Sparse invariant checks are implicitly disabled. Memory errors ..."  # torch 2.11
            warnings.warn(invariants, UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]


def test_concurrent_sparse_builds_leave_the_warning_filters_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads building CSR matrices at once must not leave the library's temporary "ignore UserWarning"
    filter installed: ``warnings.catch_warnings`` saves and restores the process-wide filter list, so two
    unserialised blocks that overlap can restore each other's filter and silence every later ``UserWarning``.
    The build is slowed down so that the blocks overlap whenever the library lets them (the second thread
    leaves last). (As the first builds of a process: later builds install no filter.)"""
    monkeypatch.setattr(kernels, "_quieted", threading.Event())
    real_csr = torch.sparse_csr_tensor
    both_inside = threading.Barrier(2)
    first_inside = threading.Event()

    def overlapping_csr(*args: object, **kwargs: object) -> torch.Tensor:
        if threading.current_thread().name == "first":
            first_inside.set()
        with contextlib.suppress(threading.BrokenBarrierError):  # serialised blocks never meet: a timeout
            both_inside.wait(timeout=0.5)
        if threading.current_thread().name == "second":
            time.sleep(0.1)
        return real_csr(*args, **kwargs)

    monkeypatch.setattr(torch, "sparse_csr_tensor", overlapping_csr)
    sp = torch.tensor([[[0, 0, 1], [2, 2, 1]]])
    x = torch.arange(6.0).view(1, 1, 2, 3)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            torch.testing.assert_close(
                SuperpixelAssignment(sp, 3, backend="sparse").uniformize(x),
                SuperpixelAssignment(sp, 3).uniformize(x),
            )
        except AssertionError as e:  # reported by the main thread
            errors.append(e)

    before = list(warnings.filters)
    first, second = threading.Thread(target=work, name="first"), threading.Thread(target=work, name="second")
    first.start()
    assert first_inside.wait(timeout=10)
    second.start()
    first.join(timeout=30)
    second.join(timeout=30)
    assert not errors, errors
    assert warnings.filters == before


def _sparse_round_trip(sp: torch.Tensor, x: torch.Tensor) -> None:
    """CSR builds of every kind: the matrices of the forward, those of the backward, and ``to_sparse``."""
    a = SuperpixelAssignment(sp, 3, backend="sparse")
    a.uniformize(x.clone().requires_grad_()).sum().backward()
    a.to_sparse(torch.sparse_csr)


def test_a_later_csr_build_shows_no_warning() -> None:
    """PyTorch gives its sparse-matrix warnings once per process, which is why the builds after the first
    install no warning filter: on a PyTorch that repeats them, this fails."""
    sp, x = torch.tensor([[[0, 0, 1], [2, 2, 1]]]), torch.arange(6.0).view(1, 1, 2, 3)
    _sparse_round_trip(sp, x)  # the first build (unless an earlier test made one)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _sparse_round_trip(sp, x)
    assert [str(w.message) for w in seen] == []


def _first_sparse_block() -> None:
    """A forked child's first :func:`quiet_sparse_beta` block (its exit code tells the parent it ended)."""
    with kernels.quiet_sparse_beta():
        pass


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="fork is POSIX")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_while_another_thread_holds_the_warnings_lock_leaves_the_child_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process forked while another thread is inside the first sparse build (a DataLoader worker started
    then) gets a lock of its own: before, the child inherited the held lock and its first build hung."""
    import multiprocessing

    monkeypatch.setattr(kernels, "_quieted", threading.Event())
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with kernels._WARNINGS_LOCK:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        child = multiprocessing.get_context("fork").Process(target=_first_sparse_block)
        child.start()
        child.join(timeout=20)
        hung = child.exitcode is None
        if hung:
            child.kill()
            child.join()
        assert not hung, "the child's first sparse build waited for a lock no thread of it holds"
        assert child.exitcode == 0
    finally:
        release.set()
        holder.join()


def test_no_sparse_warning_whatever_the_first_build() -> None:
    """In a fresh process whose first sparse build is a COO ``to_sparse`` (no CSR matrix in it), the later CSR
    builds give no warning either: the first block spends every once-per-process warning. Before, that
    block ended the filtering and the CSR beta warning reached the user at the next build."""
    code = (
        "import warnings, torch\n"
        "from sparse_ops import SuperpixelAssignment\n"
        "sp, x = torch.tensor([[[0, 0, 1], [2, 2, 1]]]), torch.arange(6.0).view(1, 1, 2, 3)\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    SuperpixelAssignment(sp, 3).to_sparse()\n"
        "    a = SuperpixelAssignment(sp, 3, backend='sparse')\n"
        "    a.uniformize(x.clone().requires_grad_()).sum().backward()\n"
        "    a.to_sparse(torch.sparse_csr)\n"
        "print([str(w.message)[:60] for w in seen])\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_first_sparse_build_ignores_the_default_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1 x 1 matrices that spend PyTorch's once-per-process sparse warnings are the library's own: built
    on the CPU whatever the default device. Under ``torch.device("meta")`` (a model built without memory) the
    first sparse build of a CPU assignment raised ``NotImplementedError`` (no CSR conversion on the meta
    device); under a CUDA default it would have started CUDA for a CPU op."""
    monkeypatch.setattr(kernels, "_quieted", threading.Event())  # as the first block of a process
    sp, x = torch.tensor([[[0, 0, 1], [2, 2, 1]]]), torch.arange(6.0).view(1, 1, 2, 3)
    with torch.device("meta"):
        out = SuperpixelAssignment(sp, 3, backend="sparse").uniformize(x)
    assert kernels._quieted.is_set()  # the block ran to its end
    torch.testing.assert_close(out, SuperpixelAssignment(sp, 3).uniformize(x), rtol=0, atol=0)


def test_a_build_that_waited_for_the_first_block_changes_no_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that finds no block ended yet waits for the first one's lock; once that block has spent the
    warnings, it must not install filters of its own (``warnings.catch_warnings``, whose restore can undo
    another thread's temporary filter or keep it for good): only the first block enters one. Before, every
    build queued behind the first block did. The second thread's steps are ordered by events, not sleeps."""
    monkeypatch.setattr(kernels, "_quieted", threading.Event())  # as the first block of a process
    second_waits = threading.Event()

    class WatchedLock:
        """The warnings lock, telling when the second thread (past its look at ``_quieted``) asks for it."""

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __enter__(self) -> bool:
            if threading.current_thread().name == "second":
                second_waits.set()
            return self.lock.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.lock.__exit__(None, None, None)

    monkeypatch.setattr(kernels, "_WARNINGS_LOCK", WatchedLock())
    entered: list[str] = []

    class CountingCatchWarnings(warnings.catch_warnings):
        def __enter__(self) -> Any:
            entered.append(threading.current_thread().name)
            return super().__enter__()

    monkeypatch.setattr(warnings, "catch_warnings", CountingCatchWarnings)

    def first() -> None:
        with kernels.quiet_sparse_beta():
            second.start()
            assert second_waits.wait(timeout=10)

    def run_second() -> None:
        with kernels.quiet_sparse_beta():
            pass

    second = threading.Thread(target=run_second, name="second")
    one = threading.Thread(target=first, name="first")
    one.start()
    one.join(timeout=30)
    second.join(timeout=30)
    assert second_waits.is_set() and not second.is_alive()
    assert entered == ["first"]


def test_a_later_csr_build_leaves_another_threads_warning_filters_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another thread's ``warnings.catch_warnings`` block, which no lock of ours serialises, entered before a
    CSR build and left during it: its temporary filter must not come back when the build ends (a block of
    ours restored the filter list saved on entry, that thread's filter included, for good). The two threads'
    steps are played in this one, in that order."""
    sp, x = torch.tensor([[[0, 0, 1], [2, 2, 1]]]), torch.arange(6.0).view(1, 1, 2, 3)
    _sparse_round_trip(sp, x)  # the first build (unless an earlier test made one)
    before = list(warnings.filters)
    other = warnings.catch_warnings()
    left: list[bool] = []
    real_csr = torch.sparse_csr_tensor

    def csr_during_which_the_other_block_ends(*args: object, **kwargs: object) -> torch.Tensor:
        if not left:
            other.__exit__(None, None, None)
            left.append(True)
        return real_csr(*args, **kwargs)

    other.__enter__()
    try:
        warnings.simplefilter("error", DeprecationWarning)  # the other thread's temporary filter
        monkeypatch.setattr(torch, "sparse_csr_tensor", csr_during_which_the_other_block_ends)
        SuperpixelAssignment(sp, 3, backend="sparse").uniformize(x)
        after = list(warnings.filters)
    finally:
        if not left:
            other.__exit__(None, None, None)
        warnings.filters[:] = before
    assert left
    assert after == before


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
@pytest.mark.parametrize("masked", [False, True])
def test_an_assignment_serves_both_inference_mode_and_training(backend: str, masked: bool) -> None:
    """An assignment built once under ``torch.inference_mode()`` (e.g. cached by an evaluation loop) and
    reused in training gives the gradients of one built outside (autograd refuses to save inference tensors:
    "Inference tensors cannot be saved for backward", naming none of them), and one built and used in
    training still runs under ``torch.inference_mode()`` (the sparse backend's cached matrices raised
    "Cannot set version_counter for inference tensor")."""
    g = torch.Generator().manual_seed(0)
    sp = torch.randint(0, 5, (2, 4, 6), generator=g)
    mask = torch.rand(2, 4, 6, generator=g) > 0.3 if masked else None
    with torch.inference_mode():
        cached = SuperpixelAssignment(sp, 5, mask=mask, backend=backend)  # type: ignore[arg-type]
        assert not cached.counts.is_inference()
        torch.testing.assert_close(cached.counts, SuperpixelAssignment(sp, 5, mask=mask).counts)
        for dtype in (torch.float32, torch.float64):  # the sparse backend's matrices are built on first use
            cached.uniformize(torch.zeros(2, 1, 4, 6, dtype=dtype))
            cached.decode(torch.zeros(2, 5, 1, dtype=dtype))
    fresh = SuperpixelAssignment(sp, 5, mask=mask, backend=backend)  # type: ignore[arg-type]
    x = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64)
    p = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    runs = (
        lambda a, x, p: a.uniformize(x),
        lambda a, x, p: a.pool(x, "mean"),
        lambda a, x, p: a.pool(x, "max"),
        lambda a, x, p: a.decode(p),
    )
    for run in runs:
        grads = []
        for a in (cached, fresh):
            xg, pg = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
            out = run(a, xg, pg)
            grads.append(torch.autograd.grad(out.pow(2).sum(), (xg, pg), allow_unused=True))
        for got, want in zip(*grads, strict=True):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want)
    with torch.inference_mode():  # back to evaluation with both, their training-mode matrices cached
        for run in runs:
            torch.testing.assert_close(run(cached, x, p), run(fresh, x, p))
            torch.testing.assert_close(run(fresh, x, p), run(SuperpixelAssignment(sp, 5, mask=mask), x, p))


def test_counts_of_images_without_pixels_have_one_entry_per_superpixel() -> None:
    """``counts`` is ``LongTensor[B, N_s]`` also where there is no pixel (an empty batch, ``H = 0`` or
    ``W = 0``), with a mask or without: all zeros, ``N_s`` wide like the pooled result."""
    for shape in ((2, 0, 3), (2, 3, 0), (0, 2, 3)):
        sp = torch.zeros(shape, dtype=torch.long)
        for mask in (None, torch.ones(shape, dtype=torch.bool)):
            a = SuperpixelAssignment(sp, 5, mask=mask)
            assert a.counts.shape == (shape[0], 5) and a.counts.dtype == torch.long, (shape, mask is None)
            assert not a.counts.any()
            assert a.pool(torch.randn(shape[0], 2, *shape[1:])).shape == (shape[0], 5, 2)
