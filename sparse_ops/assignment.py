"""The sparse pixel-to-superpixel encoder, built once from a label map and reused for many tensors."""

from __future__ import annotations

import contextlib
import warnings
from typing import Literal, SupportsIndex, get_args

import torch
from torch import Tensor

from sparse_ops import _checks, _float64
from sparse_ops._kernels import apply_average, apply_decode, apply_pool, quiet_sparse_beta
from sparse_ops._layout import Layout, _functorch_transforms_active, build_layout

__all__ = ["AUTO_BACKEND", "Backend", "Reduce", "SuperpixelAssignment"]

#: The ``backend`` option (exported as ``sparse_ops.Backend``, to annotate one's own wrappers).
Backend = Literal["auto", "scatter", "sparse"]
#: The ``reduce`` option of the pooling ops (exported as ``sparse_ops.Reduce``).
Reduce = Literal["mean", "sum", "max"]
BACKENDS: tuple[str, ...] = get_args(Backend)
REDUCTIONS: tuple[str, ...] = get_args(Reduce)

#: What ``backend="auto"`` runs on each device type. From ``benchmarks/bench_uniformize.py``, on CPU "scatter"
#: is 4.8-5.7x faster than "sparse" forward+backward (2026-12-01; 2.7-5.5x in earlier runs) with half the
#: extra memory; no GPU figure exists yet, and on CUDA "scatter" is the backend covered by
#: ``torch.use_deterministic_algorithms`` and ``torch.compile``.
AUTO_BACKEND: dict[str, Literal["scatter", "sparse"]] = {"cpu": "scatter", "cuda": "scatter"}

#: The value dtypes of :meth:`SuperpixelAssignment.to_sparse`: those PyTorch's sparse COO and CSR kernels
#: (``coalesce``, ``to_dense``) support on the CPU (uint16/32/64, complex32 and float8 raise deep inside).
_SPARSE_VALUE_DTYPES = _checks.KERNEL_DTYPES


def _outside_inference_mode() -> contextlib.AbstractContextManager[object]:
    """``torch.inference_mode(False)`` while inference mode is on (not when compiling), else a no-op: the
    tensors an assignment keeps must not be inference tensors, which autograd refuses to save, so that one
    built under ``torch.inference_mode()`` still serves a training step."""
    if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
        return torch.inference_mode(False)
    return contextlib.nullcontext()


def validate_labels(
    superpixels: object, num_superpixels: object, mask: object
) -> tuple[Tensor, int | Tensor | None, Tensor | None]:
    """Check a label map, its ``num_superpixels`` and ``mask``; return ``([B, H, W], num_superpixels, mask)``.

    Types, shapes and devices only (always checked): the id range (a host-device synchronisation) is
    :func:`validate_ids`.
    """
    labels = _checks.check_label_map(superpixels)
    _checks.check_not_vmapped(labels, "superpixels")
    _checks.check_not_vmapped(mask if isinstance(mask, Tensor) else None, "mask")
    num = _checks.check_num_superpixels(num_superpixels, labels.shape[0])
    if isinstance(num, Tensor) and num.is_meta and not labels.is_meta:  # its counts are read: it has none
        raise ValueError(
            "num_superpixels must be a Tensor with values (on the CPU or the label map's device, "
            f"{labels.device}), got one on the meta device"
        )
    if mask is not None:
        mask = _checks.check_mask(mask, labels)
    return labels, num, mask


def validate_ids(
    labels: Tensor,
    num_superpixels: int | Tensor | None,
    *,
    bound_name: str = "num_superpixels",
    advice: str | None = None,
) -> None:
    """Check that the ids of ``labels[B, H, W]`` lie in ``[0, num_superpixels)`` (synchronises);
    ``bound_name`` and ``advice`` word the error of a too large id (see ``_checks.check_id_range``)."""
    per_image = num_superpixels if isinstance(num_superpixels, Tensor) else None
    bound = None if isinstance(num_superpixels, Tensor) else num_superpixels
    _checks.check_id_range(
        labels.flatten(1), bound, per_image, "superpixels", bound_name=bound_name, advice=advice
    )


def _reciprocals(counts: Tensor) -> Tensor:
    """``1 / count`` ``[B, 1, N_s + 1]`` in float64 from ``counts[B, N_s]``: 0 for an empty superpixel and for
    the trash slot (the last); exact integers, one rounding."""
    inv = torch.where(counts > 0, counts.double().reciprocal(), 0.0)
    return torch.cat([inv, inv.new_zeros(counts.shape[0], 1)], dim=1).unsqueeze(1)


def _as_compute(x: Tensor) -> Tensor:
    """``x`` in the accumulation dtype: float32 for half types, else its own."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class SuperpixelAssignment:
    r"""A batched pixel-to-superpixel assignment: the paper's sparse encoder as a reusable object.

    It applies the encoder :math:`E = \operatorname{diag}(1/n) M` and the decoder :math:`D = M^\top` of the
    binary matrix :math:`M \in \{0, 1\}^{N_s \times N_p}` (:math:`M_{sp} = 1` iff pixel :math:`p` lies in
    superpixel :math:`s`) to any number of tensors without rebuilding anything. Building it sorts each image's
    ids once (the accumulator layout that bounds the rounding error of every sum, see
    :doc:`/concepts/uniformization`); nothing of size :math:`N_s \times N_p` is ever formed.

    Args:
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel id of every pixel, any integer
            dtype, ids in ``[0, num_superpixels)``; ids need not be contiguous (missing ids are empty
            superpixels). The assignment keeps its own copy: later in-place changes of the tensor do not
            affect it.
        num_superpixels (int | LongTensor[B] | None): number of superpixel slots ``N_s``. An int applies to
            every image; a per-image tensor bounds each image's ids and ``N_s`` is its maximum; ``None``
            infers ``N_s = max id + 1``. A tensor or ``None`` costs one host-device synchronisation
            (``.item()``), which also breaks ``torch.compile`` graphs: pass an int in hot loops. ``N_s`` above
            ``max(2**16, 16 * H * W)`` raises a ``ValueError`` (see :func:`~sparse_ops.relabel_contiguous`).
        mask (BoolTensor[B, H, W] | None): pixels that count in the means (``True``). Masked-out pixels still
            *receive* their superpixel's mean; a superpixel without any counted pixel leaves its pixels
            unchanged in :meth:`uniformize` and pools to 0. ``None``: every pixel counts. Copied like
            ``superpixels``.
        backend (str): ``"scatter"`` (``scatter_add_`` + ``gather`` in self-adjoint autograd Functions),
            ``"sparse"`` (``torch.sparse`` CSR matrix products, the paper's formulation) or ``"auto"`` (a
            per-device choice, :data:`~sparse_ops.assignment.AUTO_BACKEND`: ``"scatter"`` on CPU and CUDA).
            Inside ``torch.func`` transforms and ``torch.export``, which do not support sparse tensors,
            ``"sparse"`` runs the scatter kernels. On a device without float64 (Apple MPS, which has no sparse
            CSR tensors) ``"sparse"`` raises a ``ValueError``.
        validate (bool): check the id range (a host-device synchronisation, which also breaks
            ``torch.compile`` graphs). Types, shapes and devices are checked here and at every method call
            whatever ``validate`` says (they read no tensor value).

    Attributes:
        counts (LongTensor[B, N_s]): number of counted (unmasked) pixels per superpixel.
        num_superpixels (int): ``N_s``.
        backend (str): the resolved backend, ``"scatter"`` or ``"sparse"``.

    Example:
        >>> import torch
        >>> sp = torch.tensor([[[0, 0, 1], [2, 2, 1]]])
        >>> a = SuperpixelAssignment(sp)
        >>> a.counts
        tensor([[2, 2, 2]])
        >>> x = torch.arange(6.).view(1, 1, 2, 3)
        >>> a.encode(x)[0, :, 0]
        tensor([0.5000, 3.5000, 3.5000])
        >>> a.uniformize(x)
        tensor([[[[0.5000, 0.5000, 3.5000],
                  [3.5000, 3.5000, 3.5000]]]])
    """

    #: Whether the methods check their inputs: an assignment built by an op that checked them (once per call)
    #: does not check them again (:meth:`_unchecked`).
    _check_inputs = True

    def __init__(
        self,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = None,
        *,
        mask: Tensor | None = None,
        backend: Backend = "auto",
        validate: bool = True,
    ) -> None:
        _checks.check_option(backend, "backend", BACKENDS)
        validate = _checks.check_bool(validate, "validate")
        superpixels, num_superpixels, mask = validate_labels(superpixels, num_superpixels, mask)
        if validate:
            validate_ids(superpixels, num_superpixels)
        with _outside_inference_mode():  # kept for reuse: no inference tensors (see the helper)
            self._build(superpixels, num_superpixels, mask, backend, compact=False)

    @classmethod
    def _unchecked(
        cls,
        labels: Tensor,
        num_superpixels: int | Tensor | None,
        mask: Tensor | None = None,
        backend: Backend = "auto",
        *,
        compact: bool = False,
        limit_slots: bool = True,
    ) -> SuperpixelAssignment:
        """An assignment of inputs that the calling op has checked (each input is checked once per call); its
        methods do not check theirs again.

        ``compact``: the slots are the distinct ids of each image (for uniformization), so memory is
        proportional to the pixels whatever the id values; ``counts`` and the pooled outputs are then indexed
        by compact ids: :meth:`uniformize` is meaningful, and :meth:`decode` of the rows of the slots' ids
        (:meth:`_slot_ids`). ``limit_slots=False``: no slot limit, for a decoder whose input ``[B, N_s, C]``
        exists already and has no more slots than pixels (its layout is then no larger than the pixels').
        """
        self = cls.__new__(cls)
        self._build(labels, num_superpixels, mask, backend, compact=compact, limit_slots=limit_slots)
        self._check_inputs = False
        return self

    def _build(
        self,
        superpixels: Tensor,
        num_superpixels: int | Tensor | None,
        mask: Tensor | None,
        backend: Backend,
        *,
        compact: bool,
        limit_slots: bool = True,
    ) -> None:
        # the callers have run validate_labels (types, shapes, and vmap's flag test: a clear error instead of
        # PyTorch's) whatever validate says: each input is checked once per call
        labels = _checks.drop_channel_dim(superpixels)
        if backend == "sparse" and not _float64.has_float64(labels.device):
            raise ValueError(
                f"backend='sparse' is not supported on {labels.device}, a device without float64 (on mps "
                "PyTorch has no sparse CSR tensors either), got backend='sparse'; use backend='scatter' "
                "(what 'auto' picks there)"
            )
        b, h, w = labels.shape
        n = h * w
        index = labels.reshape(b, n).to(torch.long, copy=True)  # own copy: no aliasing of the caller's map
        device = index.device
        if device.type == "meta" and not isinstance(num_superpixels, int):  # a count read from the values
            raise ValueError(
                "num_superpixels must be an int for a label map on the meta device (shapes only: no ids or "
                f"counts to read), got {'None' if num_superpixels is None else 'a Tensor'}"
            )
        if not isinstance(num_superpixels, int):  # the size N_s would be read from tensor values
            given = "None (N_s = max id + 1)" if num_superpixels is None else "a Tensor (N_s = its maximum)"
            _checks.check_not_exporting(
                f"num_superpixels={given} reads a size from tensor values", _checks.NUM_SUPERPIXELS_EXPORT_FIX
            )
        if isinstance(num_superpixels, Tensor):
            num_ids = 0
            if num_superpixels.numel():  # one read for both bounds: a negative count fails also unvalidated
                low, num_ids = torch.stack(torch.aminmax(num_superpixels)).tolist()
                if low < 0:
                    raise ValueError(f"num_superpixels must be >= 0, got {num_superpixels.tolist()}")
            inferred = False
        elif num_superpixels is None:
            num_ids = int(index.max()) + 1 if index.numel() else 0
            inferred = True
        else:
            num_ids = int(num_superpixels)
            inferred = False
        if limit_slots and not compact:  # compact slots: distinct ids of each image, at most one per pixel
            _checks.check_slot_count(num_ids, n, inferred)
        layout, num_space = build_layout(index, num_ids, compact=compact)
        masked = (
            None if mask is None else _checks.drop_channel_dim(mask).reshape(b, n).to(torch.bool, copy=True)
        )
        if masked is None:
            counts = layout.sizes
            slot_counted, space_counted, keep = layout.slot, layout.space, None
        else:
            counts = torch.zeros_like(layout.sizes).scatter_add_(1, layout.space.view(b, n), masked.long())
            flat_mask = masked.view(b, 1, n)
            # uncounted pixels: summed into the trash slot, reading the trash entry (0 in the adjoints)
            slot_counted = torch.where(flat_mask, layout.slot, num_space * layout.lanes)
            space_counted = torch.where(flat_mask, layout.space, num_space)
            keep = torch.gather(counts, 1, layout.space.view(b, n)).eq(0).view(b, 1, n)

        self.num_superpixels: int = num_space
        # N_s = the bound of the ids (num_superpixels, or max id + 1), also where the slots are compact ids
        self._num_ids: int = num_ids
        self.counts: Tensor = counts
        self.batch_size, self.height, self.width = b, h, w
        self.backend: Literal["scatter", "sparse"] = (
            AUTO_BACKEND.get(device.type, "scatter") if backend == "auto" else backend
        )
        self._mask = masked
        self._layout: Layout = layout
        self._slot_counted = slot_counted
        self._space_counted = space_counted
        self._keep = keep
        if _float64.has_float64(device):
            self._inv64: Tensor | None = _reciprocals(counts)
            self._inv32 = self._inv64.float()
        else:  # the same float64 values on the host, kept in float32 ([B, N_s]: small)
            self._inv64 = None
            self._inv32 = _float64.to_device(_reciprocals(_float64.to_host(counts)).float(), device)
        self._csr_cache: dict[tuple[str, torch.dtype, bool], Tensor] = {}  # (name, dtype, inference mode)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        """The device of the assignment (that of the label map)."""
        return self.counts.device

    @property
    def mask(self) -> Tensor | None:
        """A copy of the mask ``[B, H, W]`` given at construction, or ``None``.

        A copy at every access: changing it in place leaves the assignment as built (a view of the kept mask
        changed the gradient-carrying max pooling and :meth:`to_sparse` only, not the counts or the means).
        """
        if self._mask is None:
            return None
        return self._mask.view(self.batch_size, self.height, self.width).clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, size=({self.height}, {self.width}), "
            f"num_superpixels={self.num_superpixels}, masked={self._mask is not None}, "
            f"backend={self.backend!r})"
        )

    def __getstate__(self) -> dict[str, object]:
        """The state for ``copy`` and ``pickle``, without the cached CSR matrices of the sparse backend.

        Sparse CSR tensors cannot be deep-copied; the copy rebuilds its matrices on first use.
        """
        state = self.__dict__.copy()
        state["_csr_cache"] = {}
        return state

    def _inv(self, dtype: torch.dtype) -> Tensor:
        """``1 / count`` per slot ``[B, 1, N_s + 1]`` in ``dtype`` (0 for empty slots and the trash).

        Built with the assignment (no state changes on use: safe in compiled and checkpointed regions).
        """
        if dtype == torch.float32:
            return self._inv32
        if self._inv64 is None:  # a device without float64: half types from float32 give the same values
            if dtype == torch.float64:
                raise TypeError(
                    f"dtype must be torch.float32 or a half type on {self.device}, which has no float64, got "
                    "torch.float64"
                )
            return self._inv32.to(dtype)
        return self._inv64 if dtype == torch.float64 else self._inv64.to(dtype)

    def _use_sparse(self) -> bool:
        if self.backend != "sparse":
            return False
        # torch.func and torch.export do not support sparse tensors: run the same maps with the scatter
        # kernels (identical results up to rounding)
        if _functorch_transforms_active() or torch.compiler.is_exporting():
            return False
        if self.device.type == "cuda" and torch.are_deterministic_algorithms_enabled():
            warnings.warn(
                "backend='sparse' is not covered by torch.use_deterministic_algorithms on CUDA "
                "(cuSPARSE products may vary run to run); using the deterministic 'scatter' backend instead",
                UserWarning,
                stacklevel=3,
            )
            return False
        return True

    def _slot_ids(self, labels: Tensor) -> Tensor:
        """``LongTensor[B, S]``: the id of ``labels`` (the map this assignment was built from) in each slot;
        for a compact assignment the distinct ids of each image in order, then 0 for the unused slots."""
        b, n = self.batch_size, self.height * self.width
        ids = labels.reshape(b, n).long()
        return ids.new_zeros(b, self.num_superpixels).scatter_(1, self._layout.space.view(b, n), ids)

    def _index(
        self, name: Literal["slot", "slot_counted", "space", "space_counted"], dtype: torch.dtype
    ) -> Tensor:
        """The ``[B, 1, N]`` index ``name``, or for the sparse backend its CSR matrix ``[B*N, B*width]``."""
        index = {
            "slot": self._layout.slot,
            "slot_counted": self._slot_counted,
            "space": self._layout.space,
            "space_counted": self._space_counted,
        }[name]
        if not self._use_sparse():
            return index
        # one set per mode: PyTorch cannot take a view (the product's transpose) of a normal sparse tensor in
        # inference mode, and autograd refuses to save an inference tensor outside it
        key = (name, dtype, torch.is_inference_mode_enabled())
        matrix = self._csr_cache.get(key)
        if matrix is None:  # one entry per pixel row, built in row order: no sort
            b, n = self.batch_size, self.height * self.width
            width = self.num_superpixels + 1
            if name.startswith("slot"):
                width = self.num_superpixels * self._layout.lanes + 1 + self._layout.extra_group.shape[-1]
            cols = (index.view(b, n) + torch.arange(b, device=self.device).view(b, 1) * width).reshape(-1)
            with quiet_sparse_beta():
                matrix = torch.sparse_csr_tensor(
                    torch.arange(b * n + 1, device=self.device),
                    cols,
                    torch.ones(b * n, dtype=dtype, device=self.device),
                    size=(b * n, b * width),
                    device=self.device,  # not the default device (torch.set_default_device)
                    check_invariants=False,
                )
            self._csr_cache[key] = matrix
        return matrix

    def _build_sparse(self, dtype: torch.dtype) -> None:
        """Build (and cache) the CSR matrices of the sparse backend for ``dtype`` now, not on first use."""
        names: tuple[Literal["slot", "slot_counted", "space", "space_counted"], ...]
        names = ("slot", "space", "slot_counted", "space_counted")
        for name in names:
            self._index(name, dtype)

    def _flat(self, x: Tensor, name: str, *, check: bool = True) -> Tensor:
        """Check ``x[B, C, H, W]`` (unless ``check`` is False) and return it as ``[B, C, N_p]`` in the
        accumulation dtype."""
        if check and self._check_inputs:
            _checks.check_floating(x, name, "[B, C, H, W]")
            b, h, w = self.batch_size, self.height, self.width
            if x.shape[0] != b or tuple(x.shape[2:]) != (h, w):
                raise ValueError(
                    f"{name} must have shape [B, C, H, W] = [{b}, C, {h}, {w}] like the label map of the "
                    f"assignment, got {tuple(x.shape)}"
                )
            _checks.check_same_device(self.counts, "superpixels", x, name)
        x = _as_compute(x)
        return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])

    # ------------------------------------------------------------------ public API
    def pool(self, x: Tensor, reduce: Reduce = "mean") -> Tensor:
        """Reduce ``x`` over every superpixel.

        Args:
            x (Tensor[B, C, H, W]): features.
            reduce (str): ``"mean"``, ``"sum"`` or ``"max"`` over the counted pixels; an empty
                superpixel gives 0.

        Returns:
            Tensor[B, N_s, C]: pooled features in ``x``'s dtype (accumulated in float32 for half types),
            contiguous.
        """
        if self._check_inputs:
            _checks.check_option(reduce, "reduce", REDUCTIONS)
        return self._pool(self._flat(x, "x"), reduce).to(x.dtype)

    def _pool(self, xf: Tensor, reduce: str) -> Tensor:
        b, c, n = xf.shape
        n_s = self.num_superpixels
        if reduce == "max":
            index = self._space_counted.expand(b, c, n)  # uncounted pixels -> the trash slot
            # ... as zeros when a gradient flows: a NaN there would make the trash's maximum NaN, which none
            # matches (NaN gradients for them); the trash is cut off, so without a gradient it changes nothing
            if self._mask is not None and xf.requires_grad:
                xf = torch.where(self._mask.view(b, 1, n), xf, 0.0)
            # from NaN, which equals no maximum: the backward of scatter_reduce("amax") counts the start value
            # as a tie even with include_self=False (which keeps it out of the forward), so a start of 0 gave
            # each of the k maximal pixels of a superpixel whose maximum is 0 1/(k+1) of the gradient, and a
            # start of -inf did the same where the maximum is -inf; a superpixel without counted pixels keeps
            # the start and pools to 0 (the where below)
            start = xf.new_full((b, c, n_s + 1), float("nan"))
            out = torch.where(
                self._inv32 > 0, start.scatter_reduce(2, index, xf, "amax", include_self=False), 0.0
            )
        else:
            scale = self._inv(xf.dtype) if reduce == "mean" else None
            layout = self._layout
            out = apply_pool(
                xf,
                self._index("slot_counted", xf.dtype),
                self._index("space_counted", xf.dtype),
                scale,
                layout.extra_group,
                layout.group_owner,
                n_s,
                layout.lanes,
            )
        return out[..., :n_s].transpose(1, 2).contiguous()  # dense [B, N_s, C], like the docs say

    def encode(self, x: Tensor) -> Tensor:
        """Superpixel means ``E x`` (the sparse encoder, paper Eq. 13): ``pool(x, "mean")``.

        Args:
            x (Tensor[B, C, H, W]): features or logits.

        Returns:
            Tensor[B, N_s, C]: the mean of every superpixel (0 for an empty one).
        """
        return self.pool(x, "mean")

    def decode(self, pooled: Tensor) -> Tensor:
        """Broadcast one vector per superpixel back to its pixels (``D p = M^T p``, the decoder).

        Args:
            pooled (Tensor[B, N_s, C]): a value per superpixel.

        Returns:
            Tensor[B, C, H, W]: every pixel gets its superpixel's vector, ``pooled``'s dtype.
        """
        b, n_s = self.batch_size, self.num_superpixels
        if self._check_inputs:
            _checks.check_floating(pooled, "pooled", "[B, N_s, C]")
            _checks.check_same_device(self.counts, "superpixels", pooled, "pooled")
            if pooled.shape[0] != b or pooled.shape[1] != n_s:
                raise ValueError(
                    f"pooled must have shape [B, N_s, C] = [{b}, {n_s}, C], got {list(pooled.shape)}"
                )
        return self._decode(_as_compute(pooled)).to(pooled.dtype)

    def _decode(self, pooled: Tensor) -> Tensor:
        """``pooled[B, N_s, C]`` (accumulation dtype) -> ``[B, C, H, W]``."""
        z = torch.nn.functional.pad(pooled.transpose(1, 2), (0, 1))  # the trash slot, never read forward
        layout = self._layout
        n = self.height * self.width
        out = apply_decode(
            z,
            self._index("space", z.dtype),
            self._index("slot", z.dtype),
            layout.extra_group,
            layout.group_owner,
            n,
            layout.lanes,
        )
        return out.view(self.batch_size, out.shape[1], self.height, self.width)

    def uniformize(self, x: Tensor) -> Tensor:
        """Replace every pixel's vector by its superpixel's mean: ``D E x`` (paper Eq. 12).

        Args:
            x (Tensor[B, C, H, W]): logits.

        Returns:
            Tensor[B, C, H, W]: uniformized logits, ``x``'s dtype.
        """
        return self._uniformize(x, check=True)

    def _uniformize_unchecked(self, x: Tensor) -> Tensor:
        """:meth:`uniformize` of an ``x`` that its caller has checked, without the input checks: for a map
        called inside an autograd Function's backward (e.g. to recompute a uniformization), where Dynamo
        refuses the checks' reads of a tensor's ``layout`` (under ``torch.compile``, a graph break; an error
        with ``fullgraph=True``)."""
        return self._uniformize(x, check=False)

    def _uniformize(self, x: Tensor, *, check: bool) -> Tensor:
        xf = self._flat(x, "x", check=check)
        dtype = xf.dtype
        masked = self._mask is not None
        layout = self._layout
        y = apply_average(
            xf,
            self._index("slot_counted", dtype),
            self._index("space", dtype),
            self._index("slot", dtype) if masked else None,
            self._index("space_counted", dtype) if masked else None,
            self._inv(dtype),
            self._keep,
            layout.extra_group,
            layout.group_owner,
            layout.lanes,
        )
        return y.reshape(x.shape).to(x.dtype)

    def to_sparse(
        self,
        layout: torch.layout = torch.sparse_coo,
        *,
        dtype: torch.dtype | None = None,
        normalized: bool = False,
    ) -> Tensor:
        r"""The block-diagonal encoder matrix over the whole batch as a ``torch.sparse`` tensor.

        Args:
            layout (torch.layout): ``torch.sparse_coo`` (built without a sort, uncoalesced) or
                ``torch.sparse_csr`` (needs one sort by row; on a device without float64, Apple MPS, where
                PyTorch has no CSR tensors, a ``ValueError``).
            dtype (torch.dtype | None): value dtype (a floating one with ``normalized``); ``None``:
                ``torch.get_default_dtype()``, as every other factory of the package (float32 unless set).
            normalized (bool): values ``1 / count`` (the encoder :math:`E`) instead of 1 (the binary
                :math:`M`).

        Returns:
            Tensor[B*N_s, B*N_p]: entry ``(b * N_s + s, b * N_p + p)`` for every counted pixel ``p`` of image
            ``b`` in superpixel ``s``; ``M @ x_rows`` with ``x_rows = x.permute(0, 2, 3, 1).reshape(B * N_p,
            C)`` gives the per-superpixel sums. (Products with it accumulate each row in one chain: for
            exact-to-rounding sums of large superpixels use :meth:`pool`.)

        Raises:
            ValueError: ``layout`` a ``torch.layout`` other than the two, or CSR on a device without float64.
            TypeError: ``layout`` not a ``torch.layout``; ``dtype`` not a value dtype of PyTorch's sparse
                tensors (bool, the integer dtypes up to int64 and uint8, the floating dtypes, complex64,
                complex128), or not floating with ``normalized``; ``normalized`` not a bool.
        """
        if not isinstance(layout, torch.layout):  # a string ('coo'): a type error, as for dtype
            raise TypeError(f"layout must be torch.sparse_coo or torch.sparse_csr, got {layout!r}")
        if layout not in (torch.sparse_coo, torch.sparse_csr):
            raise ValueError(f"layout must be torch.sparse_coo or torch.sparse_csr, got {layout}")
        if layout == torch.sparse_csr and not _float64.has_float64(self.device):
            raise ValueError(
                f"layout=torch.sparse_csr is not supported on {self.device}, a device without float64 (on "
                "mps PyTorch has no sparse CSR tensors), got layout=torch.sparse_csr; use "
                "layout=torch.sparse_coo or an assignment on the CPU"
            )
        normalized = _checks.check_bool(normalized, "normalized")
        if dtype is None:
            dtype = torch.get_default_dtype()
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {dtype!r}")
        if normalized:  # 1 / count in an integer dtype would truncate to 0
            _checks.check_floating_dtype(dtype, "dtype", "with normalized=True")
        if dtype not in _SPARSE_VALUE_DTYPES:  # PyTorch's sparse kernels (coalesce, to_dense) lack the others
            raise TypeError(
                f"dtype must be one of {', '.join(map(str, _SPARSE_VALUE_DTYPES))} (PyTorch's sparse tensors "
                f"support no other value dtype), got {dtype}"
            )
        b, n_p, n_s = self.batch_size, self.height * self.width, self.num_superpixels
        space = self._layout.space.view(b, n_p)
        rows = (space + torch.arange(b, device=self.device).mul_(n_s).view(b, 1)).reshape(-1)
        cols = torch.arange(b * n_p, device=self.device)
        if normalized:
            values = torch.gather(self._inv(dtype)[:, 0], 1, space).reshape(-1)
        else:
            values = torch.ones(b * n_p, dtype=dtype, device=self.device)
        if self._mask is not None:
            keep = self._mask.reshape(-1)
            rows, cols, values = rows[keep], cols[keep], values[keep]
        index = torch.stack([rows, cols])
        with quiet_sparse_beta():  # torch 2.11 warns of the disabled invariant checks here too
            matrix = torch.sparse_coo_tensor(
                index, values, (b * n_s, b * n_p), device=self.device, check_invariants=False
            )
        if layout == torch.sparse_csr:
            matrix = matrix.coalesce()  # the sort: outside the process-wide lock
            with quiet_sparse_beta():
                matrix = matrix.to_sparse_csr()
        return matrix
