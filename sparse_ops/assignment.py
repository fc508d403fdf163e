"""The sparse pixel-to-superpixel encoder, built once from a label map and reused for many tensors."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from sparse_ops import _checks
from sparse_ops._kernels import AverageScatter, choose_interleave

__all__ = ["SuperpixelAssignment"]

_REDUCTIONS = ("mean", "sum", "max")


class SuperpixelAssignment:
    r"""A batched pixel-to-superpixel assignment: the paper's sparse encoder as a reusable object.

    It holds the flat ids ``b * N_s + s`` implied by a label map, the (float32) pixel count of every superpixel
    and the optional mask, and applies the encoder :math:`E = \operatorname{diag}(1/n) M` and the decoder
    :math:`D = M^\top` of the binary matrix :math:`M \in \{0, 1\}^{N_s \times N_p}` (:math:`M_{sp} = 1` iff
    pixel :math:`p` lies in superpixel :math:`s`) to any number of tensors without rebuilding anything.
    Building it is one pass over the labels (no sort, nothing of size :math:`N_s \times N_p`).

    Args:
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel id of every pixel, any integer dtype,
            ids in ``[0, num_superpixels)``; ids need not be contiguous (missing ids are empty superpixels).
        num_superpixels (int | LongTensor[B] | None): number of superpixel slots ``N_s``. An int applies to every
            image; a per-image tensor bounds each image's ids and ``N_s`` is its maximum; ``None`` infers
            ``N_s = max id + 1``. A tensor or ``None`` costs one host-device synchronisation (``.item()``), which
            also breaks ``torch.compile`` graphs: pass an int in hot loops.
        mask (BoolTensor[B, H, W] | None): pixels that count in the means (``True``). Masked-out pixels still
            *receive* their superpixel's mean; a superpixel without any counted pixel leaves its pixels unchanged
            in :meth:`uniformize` and pools to 0. ``None``: every pixel counts.
        backend (str): ``"scatter"`` (``scatter_add_`` + ``gather`` in a self-adjoint autograd Function),
            ``"sparse"`` (``torch.sparse`` CSR matrix products, the paper's formulation) or ``"auto"``
            (``"scatter"`` on every device: it is faster on CPU in ``benchmarks/bench_uniformize.py``, runs
            under ``torch.compile(fullgraph=True)`` and is deterministic under
            ``torch.use_deterministic_algorithms(True)``).
        validate (bool): check types, shapes, devices and id ranges (the range check synchronises with the
            device). ``False`` skips every check.

    Attributes:
        index (LongTensor[B, N_p]): the id of every pixel (``N_p = H * W``).
        counts (FloatTensor[B, N_s]): number of counted (unmasked) pixels per superpixel, float32.
        num_superpixels (int): ``N_s``.
        backend (str): the resolved backend, ``"scatter"`` or ``"sparse"``.

    Example:
        >>> import torch
        >>> sp = torch.tensor([[[0, 0, 1], [2, 2, 1]]])
        >>> a = SuperpixelAssignment(sp)
        >>> a.counts
        tensor([[2., 2., 2.]])
        >>> x = torch.arange(6.).view(1, 1, 2, 3)
        >>> a.encode(x)[0, :, 0]
        tensor([0.5000, 3.5000, 3.5000])
        >>> a.uniformize(x)
        tensor([[[[0.5000, 0.5000, 3.5000],
                  [3.5000, 3.5000, 3.5000]]]])
    """

    def __init__(
        self,
        superpixels: Tensor,
        num_superpixels: int | Tensor | None = None,
        mask: Tensor | None = None,
        *,
        backend: str = "auto",
        validate: bool = True,
    ) -> None:
        if validate:
            _checks.check_backend(backend)
            superpixels = _checks.check_superpixels(superpixels)
        elif superpixels.dim() == 4:
            superpixels = superpixels[:, 0]
        b, h, w = superpixels.shape
        device = superpixels.device
        if validate:
            _checks.check_num_superpixels(num_superpixels, b, device)
        index = superpixels.reshape(b, h * w).long()
        per_image: Tensor | None = None
        if isinstance(num_superpixels, Tensor):
            per_image = num_superpixels.to(device=device, dtype=torch.long)
            n_s = int(per_image.max()) if per_image.numel() else 0
        elif num_superpixels is None:
            n_s = int(index.max()) + 1 if index.numel() else 0
        else:
            n_s = int(num_superpixels)
        if validate:
            _checks.check_id_range(index, n_s, per_image)
        if mask is not None:
            if validate:
                mask = _checks.check_mask(mask, superpixels)
            elif mask.dim() == 4:
                mask = mask[:, 0]
            mask = mask.reshape(b, h * w)

        self.index: Tensor = index
        self.mask: Tensor | None = mask
        self.num_superpixels: int = n_s
        self.per_image: Tensor | None = per_image
        self.batch_size, self.height, self.width = b, h, w
        self.backend: str = "scatter" if backend == "auto" else backend
        self.validate = validate

        # Masked pixels are summed into one extra "trash" slot N_s whose 1/count is 0.
        slots = n_s + 1 if mask is not None else n_s
        scatter_plain = index if mask is None else torch.where(mask, index, n_s)
        counts = torch.zeros(b, slots, dtype=torch.float32, device=device)
        counts.scatter_add_(
            1, scatter_plain, torch.ones(1, 1, dtype=torch.float32, device=device).expand(b, h * w)
        )
        if mask is not None:
            counts = counts[:, :n_s]
        self.counts: Tensor = counts
        inv = torch.where(counts > 0, counts.reciprocal(), 0.0)
        if mask is not None:
            inv = torch.cat([inv, inv.new_zeros(b, 1)], dim=1)
        self._inv32 = inv.view(b, 1, slots)
        # Interleaved slot indices (see sparse_ops._kernels): pixel p -> s_p * k + p % k.
        k = choose_interleave(h * w, slots)
        self._k = k
        lane = (torch.arange(h * w, device=device) % k).view(1, 1, h * w) if k > 1 else None
        self._scatter_plain = scatter_plain.view(b, 1, h * w)
        self._scatter_index = self._interleave(self._scatter_plain, lane)
        # None = same as the scatter index (symmetric map; torch.compile refuses the same tensor twice)
        self._gather_index: Tensor | None = (
            None if mask is None else self._interleave(index.view(b, 1, h * w), lane)
        )
        # Pixels of a superpixel without any counted pixel pass through uniformize unchanged.
        self._keep: Tensor | None = None
        if mask is not None:
            self._keep = (torch.gather(counts, 1, index) == 0).view(b, 1, h * w)
        self._inv_cache: dict[torch.dtype, Tensor] = {}
        self._sparse_cache: dict[torch.dtype, tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ helpers
    def _interleave(self, plain: Tensor, lane: Tensor | None) -> Tensor:
        return plain if lane is None else torch.add(lane, plain, alpha=self._k)  # one allocation

    @property
    def device(self) -> torch.device:
        """The device of the assignment (that of the label map)."""
        return self.index.device

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={self.batch_size}, size=({self.height}, {self.width}), "
            f"num_superpixels={self.num_superpixels}, masked={self.mask is not None}, backend={self.backend!r})"
        )

    def _inv(self, dtype: torch.dtype) -> Tensor:
        if dtype == torch.float32:
            return self._inv32
        inv = self._inv_cache.get(dtype)
        if inv is None:  # recompute exactly in the target dtype from the (exact, integer) float32 counts
            c = self.counts.to(dtype).unsqueeze(1)
            inv = torch.where(c > 0, c.reciprocal(), 0.0)
            if self.mask is not None:
                inv = torch.cat([inv, inv.new_zeros(self.batch_size, 1, 1)], dim=2)
            self._inv_cache[dtype] = inv
        return inv

    def _flat(self, x: Tensor, name: str) -> tuple[Tensor, torch.dtype]:
        """Validate ``x[B, C, H, W]`` and return it as ``[B, C, N_p]`` in the accumulation dtype."""
        if self.validate:
            _checks.check_floating(x, name, 4, "[B, C, H, W]")
            _checks.check_same_device(x, name, self.index, "superpixels")
            _checks.check_spatial_match(x, name, self.index.view(self.batch_size, self.height, self.width))
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        return x.to(compute).reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]), compute

    def _use_sparse(self) -> bool:
        if self.backend != "sparse":
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

    def _sparse(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(D, E_m^T)``: decoder ``[B*N_p, B*N_s]`` (ones) and masked encoder transpose, both CSR.

        Built in pixel-row order, so no sort: row ``p`` holds one entry at column ``b * N_s + s_p``.
        """
        mats = self._sparse_cache.get(dtype)
        if mats is None:
            b, n_p, n_s = self.batch_size, self.height * self.width, self.num_superpixels
            offsets = torch.arange(b, device=self.device).mul_(n_s).view(b, 1)
            cols = (self.index + offsets).reshape(-1)
            crow = torch.arange(b * n_p + 1, device=self.device)
            size = (b * n_p, b * n_s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
                decoder = torch.sparse_csr_tensor(
                    crow,
                    cols,
                    torch.ones(b * n_p, dtype=dtype, device=self.device),
                    size=size,
                    check_invariants=False,
                )
                if self.mask is None:
                    encoder_t = decoder
                else:
                    encoder_t = torch.sparse_csr_tensor(
                        crow, cols, self.mask.reshape(-1).to(dtype), size=size, check_invariants=False
                    )
            mats = (decoder, encoder_t)
            self._sparse_cache[dtype] = mats
        return mats

    def _sparse_sums(self, xf: Tensor) -> Tensor:
        """Per-superpixel sums ``[B, N_s, C]`` of ``xf[B, C, N_p]`` via ``E_m = (E_m^T)^T`` times NHWC rows."""
        b, c, n_p = xf.shape
        _, encoder_t = self._sparse(xf.dtype)
        rows = xf.transpose(1, 2).reshape(b * n_p, c)
        return (encoder_t.t() @ rows).view(b, self.num_superpixels, c)

    # ------------------------------------------------------------------ public API
    def pool(self, x: Tensor, reduce: str = "mean") -> Tensor:
        """Reduce ``x`` over every superpixel.

        Args:
            x (Tensor[B, C, H, W]): features.
            reduce (str): ``"mean"``, ``"sum"`` or ``"max"`` over the counted pixels; an empty superpixel gives 0.

        Returns:
            Tensor[B, N_s, C]: pooled features in ``x``'s dtype (accumulated in float32 for half types).
        """
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
        xf, compute = self._flat(x, "features")
        b, c, n_p = xf.shape
        n_s = self.num_superpixels
        if reduce != "max" and self._use_sparse():
            pooled = self._sparse_sums(xf)
            if reduce == "mean":
                pooled = pooled * self._inv(compute)[..., :n_s].transpose(1, 2)
            return pooled.to(x.dtype)
        slots = self._inv32.shape[-1]
        if reduce == "max":
            index = self._scatter_plain.expand(b, c, n_p)
            out = xf.new_zeros(b, c, slots).scatter_reduce(2, index, xf, "amax", include_self=False)
        else:
            index = self._scatter_index.expand(b, c, n_p)
            out = xf.new_zeros(b, c, slots * self._k).scatter_add(2, index, xf)
            if self._k > 1:
                out = out.view(b, c, slots, self._k).sum(dim=3)
            if reduce == "mean":
                out = out * self._inv(compute)
        return out[..., :n_s].transpose(1, 2).contiguous().to(x.dtype)

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
            Tensor[B, C, H, W]: every pixel gets its superpixel's vector.
        """
        b, n_s = self.batch_size, self.num_superpixels
        if self.validate:
            _checks.check_floating(pooled, "pooled", 3, "[B, N_s, C]")
            _checks.check_same_device(pooled, "pooled", self.index, "superpixels")
            if pooled.shape[0] != b or pooled.shape[1] != n_s:
                raise ValueError(
                    f"pooled must have shape [B, N_s, C] = [{b}, {n_s}, C], got {list(pooled.shape)}"
                )
        c = pooled.shape[2]
        n_p = self.height * self.width
        if self._use_sparse():
            compute = torch.float32 if pooled.dtype in (torch.float16, torch.bfloat16) else pooled.dtype
            decoder, _ = self._sparse(compute)
            rows = decoder @ pooled.to(compute).reshape(b * n_s, c)
            out = rows.view(b, self.height, self.width, c).permute(0, 3, 1, 2).contiguous()
            return out.to(pooled.dtype)
        out = torch.gather(pooled.transpose(1, 2), 2, self.index.view(b, 1, n_p).expand(b, c, n_p))
        return out.view(b, c, self.height, self.width)

    def uniformize(self, x: Tensor) -> Tensor:
        """Replace every pixel's vector by its superpixel's mean: ``D E x`` (paper Eq. 12).

        Args:
            x (Tensor[B, C, H, W]): logits.

        Returns:
            Tensor[B, C, H, W]: uniformized logits, ``x``'s dtype.
        """
        xf, compute = self._flat(x, "logits")
        b, c, n_p = xf.shape
        if self._use_sparse():
            sums = self._sparse_sums(xf)
            means = sums * self._inv(compute)[..., : self.num_superpixels].transpose(1, 2)
            decoder, _ = self._sparse(compute)
            rows = decoder @ means.reshape(b * self.num_superpixels, c)
            y = rows.view(b, n_p, c).transpose(1, 2)
            if self._keep is not None:
                y = torch.where(self._keep, xf, y)
            return y.reshape(x.shape).to(x.dtype)
        y = AverageScatter.apply(
            xf, self._scatter_index, self._gather_index, self._inv(compute), self._keep, self._k
        )
        return y.view(x.shape).to(x.dtype)

    def to_sparse(
        self,
        layout: torch.layout = torch.sparse_coo,
        *,
        dtype: torch.dtype = torch.float32,
        normalized: bool = False,
    ) -> Tensor:
        r"""The block-diagonal encoder matrix over the whole batch as a ``torch.sparse`` tensor.

        Args:
            layout (torch.layout): ``torch.sparse_coo`` (built without a sort, uncoalesced) or
                ``torch.sparse_csr`` (needs one sort by row).
            dtype (torch.dtype): value dtype.
            normalized (bool): values ``1 / count`` (the encoder :math:`E`) instead of 1 (the binary :math:`M`).

        Returns:
            Tensor[B*N_s, B*N_p]: entry ``(b * N_s + s, b * N_p + p)`` for every counted pixel ``p`` of image ``b``
            in superpixel ``s``; ``M @ x_rows`` with ``x_rows = x.permute(0, 2, 3, 1).reshape(B * N_p, C)`` gives
            the per-superpixel sums.
        """
        if layout not in (torch.sparse_coo, torch.sparse_csr):
            raise ValueError(f"layout must be torch.sparse_coo or torch.sparse_csr, got {layout}")
        b, n_p, n_s = self.batch_size, self.height * self.width, self.num_superpixels
        rows = (self.index + torch.arange(b, device=self.device).mul_(n_s).view(b, 1)).reshape(-1)
        cols = torch.arange(b * n_p, device=self.device)
        if normalized:
            values = torch.gather(self._inv(dtype)[:, 0], 1, self.index).reshape(-1)
        else:
            values = torch.ones(b * n_p, dtype=dtype, device=self.device)
        if self.mask is not None:
            keep = self.mask.reshape(-1)
            rows, cols, values = rows[keep], cols[keep], values[keep]
        matrix = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), values, (b * n_s, b * n_p), check_invariants=False
        )
        if layout == torch.sparse_csr:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                matrix = matrix.coalesce().to_sparse_csr()
        return matrix
