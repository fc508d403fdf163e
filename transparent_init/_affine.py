"""Pure tensor math of transparent initialization (no modules, no validation).

Convention (row vectors, as ``nn.Linear`` computes ``y = x W^T + b``): an affine layer ``z = x A^T + b`` with
``A`` of shape ``[out, in]`` is written in homogeneous form as the ``(in + 1) x (out + 1)`` matrix

.. math::

    H(A, b) = \\begin{bmatrix} A^\\top & 0 \\\\ b & 1 \\end{bmatrix},
    \\qquad [x, 1]\\, H(A, b) = [x A^\\top + b, 1],

so a chain of layers is the product ``P = H_1 H_2 ... H_{k-1}`` (first layer on the left). The last layer
``H_k`` solves ``P H_k = G`` with ``G = H(T, t)`` the target map; ``P`` has full row rank ``in + 1`` whenever
every logical hidden width is ``>= in`` (the right-inverse condition), so ``H_k = P^+ G`` is an exact
solution, and the minimum-norm one. Everything here is computed in float64 from the parameters *as stored*
(after the cast to the layers' dtype), so the only error left at run time is the forward arithmetic of the
layers themselves.

Activation doubling: a hidden pre-activation ``z`` is carried through ``act`` as ``[z, -z]`` (the real layer
has 2x units); the next layer reads ``z`` back with ``[A, -A] / g`` since ``act(z) - act(-z) = g z`` with ``g
= 1`` for ReLU and ``g = 1 + slope`` for LeakyReLU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from ._checks import cast_representable, has_float64

__all__ = [
    "EXACT_SOLVE_RTOL",
    "MIN_ABS_FRACTION",
    "MIN_OFFSET_FRACTION",
    "REALIZE_SLACK",
    "activation_gain",
    "chain",
    "check_realized",
    "draw_hidden",
    "homogeneous",
    "restored_on_error",
    "semi_orthogonal",
    "solve_last",
    "transparent_parameters",
]

#: Hidden draws with magnitude below ``MIN_ABS_FRACTION / sqrt(width)`` (1 % of the entries' scale) are pushed
#: to that magnitude, keeping their sign: it changes ~1 % of the draws by less than 1 % of their scale, leaves
#: the chain's conditioning intact and keeps every hidden parameter well away from zero (the paper's "init
#: rate").
MIN_ABS_FRACTION = 0.01

#: Without a bias in the last layer, the chain's offset must carry the target's bias and its own out of the
#: chain's range: each hidden bias is drawn with its part outside the chain's range at least this fraction of
#: that part's root-mean-square norm (see :func:`draw_hidden`). Over 200 seeds of a 42-[43] x 4 chain the
#: last layer's solve then has a condition number of at most 46 (median 21), where plain draws reach 9462
#: (median 25). A ReLU stack 42-[43, 43]-42 (100 seeds, inputs in [-10, 10]): float32 errors up to 1.9e-3
#: (1e-4 recovery rate down to 0.69) with plain draws, up to 2.3e-5 with the floor (6.7e-6 with a last bias).
MIN_OFFSET_FRACTION = 1.0

#: The float64 solve is accepted as exact when its residual is below ``EXACT_SOLVE_RTOL`` times the largest
#: target entry. A chain with a right inverse gives ~1e-15 of it; a chain without one (a hidden width below
#: ``in_features``) leaves a residual of the order of the target itself, so the threshold only has to separate
#: those two cases. Both scale with the target, so the test is relative at every scale (a zero target is
#: solved exactly by a zero last layer).
EXACT_SOLVE_RTOL = 1e-8

#: How far (as a multiple of its worst-case rounding bound) the stored stack may miss the target map after the
#: last layer is rounded to its dtype. Rounding in the normal range stays within the bound (factor 1); an
#: entry in the subnormal range loses relative precision, so a factor 8 accepts up to 3 lost bits in the
#: entries that matter and refuses targets whose last layer underflows (e.g. ``1e-9 * I`` in float16).
REALIZE_SLACK = 8.0


def activation_gain(activation: str | None, negative_slope: float) -> float:
    """``g`` with ``act(z) - act(-z) = g z``: 1 for ReLU, ``1 + slope`` for LeakyReLU, else 1."""
    return 1.0 + float(negative_slope) if activation == "leaky_relu" else 1.0


def _randn(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Normal draws from ``generator`` (on its device), as float64 on the CPU. A generator on a device without
    float64 (``mps``) draws float32 there, widened on the CPU."""
    device = generator.device if generator is not None else torch.device("cpu")
    dtype = torch.float64 if has_float64(device) else torch.float32
    return torch.randn(shape, generator=generator, dtype=dtype, device=device).cpu().double()


@contextmanager
def restored_on_error(generator: torch.Generator | None) -> Iterator[None]:
    """Put the source of :func:`_randn`'s draws (``generator``; for ``None`` the global CPU generator) back in
    its state on entry when the block raises: a failed initialization draws nothing, as far as anyone can
    tell, and a retry draws what a first successful call would have drawn."""
    source = torch.default_generator if generator is None else generator
    state = source.get_state()
    try:
        yield
    except BaseException:
        source.set_state(state)
        raise


def _away_from_zero(t: Tensor, floor: float) -> Tensor:
    return torch.where(t.abs() < floor, torch.where(t >= 0, floor, -floor).to(t), t)


def semi_orthogonal(rows: int, cols: int, generator: torch.Generator | None = None) -> Tensor:
    """Haar-random ``[rows, cols]`` float64 matrix, orthonormal columns (rows >= cols) or rows (rows < cols).

    Drawn as the Q factor of a Gaussian matrix with the signs of ``diag(R)`` folded in (so the law is
    uniform).
    """
    big, small = max(rows, cols), min(rows, cols)
    q, r = torch.linalg.qr(_randn((big, small), generator))
    q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)
    out: Tensor = q if rows >= cols else q.T.contiguous()
    return out


def _range_preserving(rows: int, basis: Tensor, generator: torch.Generator | None) -> Tensor:
    """``[rows, cols]`` matrix, orthonormal rows, an isometry on ``span(basis)`` (``basis [cols, r]``).

    Used for narrowing layers (``rows < cols``): a Haar draw would squeeze the chain's range at random and
    worsen its conditioning; this one is ``O [U, V]^T`` with ``U`` an orthonormal basis of the range, ``V`` a
    random orthonormal completion (``rows - r`` columns, orthogonal to ``U``) and ``O`` a Haar ``rows x rows``
    rotation.
    """
    u, _ = torch.linalg.qr(basis)
    r = u.shape[1]
    g = _randn((basis.shape[0], rows - r), generator)
    g = g - u @ (u.T @ g)
    v, _ = torch.linalg.qr(g)
    return semi_orthogonal(rows, rows, generator) @ torch.cat([u, v], dim=1).T


def _offset_off_range(lin: Tensor, off: Tensor, b: Tensor, in_features: int) -> Tensor:
    """``b`` with the part of the chain's new offset ``off`` (``[h]``) outside ``range(lin)`` (``lin [h,
    in]``) raised to at least ``MIN_OFFSET_FRACTION`` of its root-mean-square norm ``sqrt((h - in) / h)``
    (``b``'s entries have scale ``1 / sqrt(h)``): only that part of ``b`` changes, along its own
    direction."""
    h = lin.shape[0]
    q, _ = torch.linalg.qr(lin)
    perp = off - q @ (q.T @ off)
    norm, floor = float(perp.norm()), MIN_OFFSET_FRACTION * math.sqrt((h - in_features) / h)
    if norm >= floor:
        return b
    if norm == 0.0:  # no direction to scale up: the part outside the range of the unit vector least in it
        unit = torch.zeros_like(off)
        unit[int((q * q).sum(1).argmin())] = 1.0
        away = unit - q @ (q.T @ unit)
        added: Tensor = away * (floor / float(away.norm()))
    else:
        added = perp * (floor / norm - 1.0)
    return b + added


def draw_hidden(
    in_features: int,
    hidden: Sequence[int],
    biases: Sequence[bool],
    generator: torch.Generator | None,
    *,
    carry_offset: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    """Logical hidden affine maps ``(A_l [h_l, h_{l-1}], b_l [h_l])`` in float64, drawn in layer order.

    ``A_l`` is semi-orthogonal rescaled to entries of scale ``1 / sqrt(h_l)`` (the rule of the authors' code).
    A widening layer (``h_l >= h_{l-1}``) is a Haar draw with orthonormal columns, so the chain stays an
    isometry of ``x`` (up to the push of tiny entries below: singular values within about 1e-3 of 1); a
    narrowing layer has orthonormal rows and is drawn as an isometry on the range of the chain so far
    (including the bias direction when there is room), then scaled by ``sqrt(h_{l-1} / h_l)`` to the entry
    scale (uniformly: its condition number stays 1), so the chain stays well conditioned whatever the
    widths. ``b_l ~ N(0, 1 / h_l)`` (zero when the layer has no bias). Tiny draws are pushed away from zero
    (see :data:`MIN_ABS_FRACTION`).

    ``carry_offset`` (the last layer has no bias): the last layer then solves with the chain's linear part
    and offset alone, so the offset needs a part outside the chain's range; with one spare dimension (a width
    ``in + 1``) a plain draw leaves that part as small as chance makes it (float32 errors 100x the usual for
    some seeds). Each biased layer wider than ``in_features`` then keeps it at least
    :data:`MIN_OFFSET_FRACTION` of its root-mean-square norm (:func:`_offset_off_range`). It draws no more
    random numbers: the generator ends in the same state, and only that bias and the narrowing layers drawn
    on the chain's range after it change.
    """
    out: list[tuple[Tensor, Tensor]] = []
    prev = in_features
    m_lin = torch.eye(in_features, dtype=torch.float64, device="cpu")  # chain so far: z = M x + m
    m_off = torch.zeros(in_features, 1, dtype=torch.float64, device="cpu")
    done = 0  # layers of ``out`` already folded into (m_lin, m_off): only a narrowing layer needs them
    for h, has_bias in zip(hidden, biases, strict=True):
        scale = 1.0 / math.sqrt(h)
        floor = MIN_ABS_FRACTION * scale
        if h >= prev:
            a = semi_orthogonal(h, prev, generator)
        else:
            m_lin, m_off, done = _fold(out, done, m_lin, m_off)
            basis = torch.cat([m_lin, m_off], dim=1) if h > in_features and bool(m_off.any()) else m_lin
            a = _range_preserving(h, basis, generator)
        a = _away_from_zero(a * math.sqrt(max(h, prev)), MIN_ABS_FRACTION) * scale
        b = _randn((h,), generator)
        b = (
            _away_from_zero(b * scale, floor)
            if has_bias
            else torch.zeros(h, dtype=torch.float64, device="cpu")
        )
        if carry_offset and has_bias and h > in_features:
            m_lin, m_off, done = _fold(out, done, m_lin, m_off)
            b = _offset_off_range(a @ m_lin, (a @ m_off)[:, 0] + b, b, in_features)
            b = _away_from_zero(b, floor)
        out.append((a, b))
        prev = h
    return out


def _fold(
    layers: Sequence[tuple[Tensor, Tensor]], done: int, m_lin: Tensor, m_off: Tensor
) -> tuple[Tensor, Tensor, int]:
    """The chain ``z = m_lin x + m_off`` with ``layers[done:]`` folded in (the same products, in the same
    order, as step by step), and the new count of folded layers."""
    for a, b in layers[done:]:
        m_lin = a @ m_lin
        m_off = a @ m_off + b[:, None]
    return m_lin, m_off, len(layers)


def homogeneous(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``[[W^T, 0], [b, 1]]`` of shape ``(in + 1, out + 1)`` for ``y = x W^T + b`` (``weight [out, in]``)."""
    out_f, in_f = weight.shape
    h = weight.new_zeros(in_f + 1, out_f + 1)
    h[:in_f, :out_f] = weight.T
    if bias is not None:
        h[in_f, :out_f] = bias
    h[in_f, out_f] = 1.0
    return h


def chain(affines: Sequence[tuple[Tensor, Tensor]], in_features: int) -> Tensor:
    """Product ``H_1 H_2 ... H_n`` of the homogeneous forms (``(in + 1, h_n + 1)``, float64)."""
    return prefix_chains(affines, in_features)[-1]


def prefix_chains(affines: Sequence[tuple[Tensor, Tensor]], in_features: int) -> list[Tensor]:
    """Every prefix product ``H_1 ... H_l`` of the homogeneous forms (``(in + 1, h_l + 1)``, float64), the
    whole chain last (``[I]`` without layers)."""
    if not affines:
        return [torch.eye(in_features + 1, dtype=torch.float64, device="cpu")]
    prefixes = [homogeneous(*affines[0])]  # not I @ H_1: the same bits, without a full product
    for a, b in affines[1:]:
        prefixes.append(prefixes[-1] @ homogeneous(a, b))
    return prefixes


def solve_last(
    p: Tensor, target_weight: Tensor, target_bias: Tensor | None, *, last_bias: bool = True
) -> tuple[Tensor, Tensor]:
    """Last logical layer ``(W [out, h], c [out])`` with ``[x, 1] P H(W, c) = [x T^T + t, 1]`` (float64).

    With a last-layer bias this is ``H(W, c) = P^+ H(T, t)``, the minimum-norm exact solution for the
    full-row-rank chain ``P``, computed by a complete orthogonal factorization (LAPACK ``gelsy``, QR with
    column pivoting): the pseudo-inverse's solution up to float64 rounding, without its SVD (at 1024 channels
    0.4 s instead of 7 s on the 2-core CPU). Without a last-layer bias, ``c = 0`` and ``W^T`` solves the first
    ``h`` columns of ``P`` alone (exact when those still have full row rank, or when the chain has no bias
    and ``t = 0``).

    Raises:
        ValueError: if no exact solution exists (the chain has no right inverse), or the solve overflows
            float64 (a target near the float64 maximum).
    """
    in_f = p.shape[0] - 1
    h = p.shape[1] - 1
    out_f = target_weight.shape[0]
    g = homogeneous(target_weight, target_bias)[:, :out_f]  # [[T^T], [t]]
    s = p if last_bias else p[:, :h]
    x = torch.linalg.lstsq(s, g, driver="gelsy").solution  # float64 on the CPU (``chain``)
    residual = (s @ x - g).abs().max().item()
    g_max = g.abs().max().item()
    if not (math.isfinite(residual) and bool(torch.isfinite(x).all())):
        # a target near the float64 maximum: the solution or its check left the float64 range (the widths are
        # not the cause, and the message blamed them)
        raise ValueError(
            f"the float64 solve overflowed (residual {residual:.3g}): the target map's largest entry "
            f"{g_max:.3g} is too close to the largest float64 ({torch.finfo(torch.float64).max:.3g}) for the "
            "last layer's solution; scale the target map down (e.g. by 1e-10) and the stack's output back up "
            "after it"
        )
    if not residual <= EXACT_SOLVE_RTOL * g_max:
        tiny = torch.finfo(torch.float64).tiny
        # below this the relative test itself underflows: float64 rounding alone fails it, whatever the widths
        too_small = (
            f" (or the target map is too small to solve in float64: its largest entry is {g_max:.3g}, the "
            f"exactness test needs it >= {tiny / EXACT_SOLVE_RTOL:.3g}; scale the target map up)"
            if EXACT_SOLVE_RTOL * g_max < tiny
            else ""
        )
        rule = (
            f"every hidden layer's logical width must be >= the input width {in_f}"
            if last_bias
            else "without a bias in the last layer, a hidden layer with a bias, and every hidden layer after "
            f"it, must have a logical width greater than the input width {in_f} (to carry the biases on): "
            "widen those or give the last layer a bias"
        )
        raise ValueError(
            f"the hidden layers have no exact right inverse (residual {residual:.3g}): {rule}{too_small}"
        )
    w = x[:h].T.contiguous()
    c = x[h].contiguous() if last_bias else torch.zeros(out_f, dtype=x.dtype, device="cpu")
    return w, c


#: The next wider floating dtype that error messages suggest.
_WIDER = {torch.float16: "float32", torch.bfloat16: "float32", torch.float32: "float64"}


def check_realized(
    p: Tensor,
    g: Tensor,
    exact: Tensor,
    stored: Tensor,
    dtype: torch.dtype,
    name: str,
    weight_divisor: float = 1.0,
) -> None:
    """Refuse a last layer that, once rounded to ``dtype``, no longer realizes the target map.

    With ``E`` the float64 solution (``[W^T; c]``, ``(h + 1) x out``) and ``S`` its value as stored (back in
    float64), rounding in the normal range gives ``|S - E| <= u |E|`` entrywise (``u`` the unit roundoff of
    ``dtype``), hence ``|P S - G| <= u |P| |E| + |P E - G|``. Entries that underflow to subnormals or zero
    break that bound; when the stored stack misses ``G`` by more than :data:`REALIZE_SLACK` times it (plus the
    float64 arithmetic of this check), the target is not representable in ``dtype`` and this raises.

    Args:
        p (Tensor[in + 1, h + 1]): the chain of the stored hidden layers (float64).
        g (Tensor[in + 1, out]): the target ``[[T^T], [t]]`` (float64).
        exact (Tensor[h + 1, out]): the float64 solution ``[W^T; c]``.
        stored (Tensor[h + 1, out]): the same after the round trip through ``dtype``.
        dtype: the storage dtype of the last layer.
        name: how the message names the layer.
        weight_divisor: the layer stores its weight rows of ``exact`` divided by this (the gain ``1 + slope``
            of a LeakyReLU before it; the bias row as is): the message reports the magnitudes as stored.

    Raises:
        ValueError: if the stored stack misses the target by more than the bound allows.
    """
    u64 = torch.finfo(torch.float64).eps / 2
    u = torch.finfo(dtype).eps / 2
    scale = p.abs() @ exact.abs()
    arithmetic = (p.shape[1] + 2) * u64 * (scale + g.abs())  # float64 rounding of both products below
    allowed = REALIZE_SLACK * u * scale + (p @ exact - g).abs() + 2 * arithmetic
    err = (p @ stored - g).abs()
    if bool((err <= allowed).all()):
        return
    worst = int(torch.argmax(err - allowed))
    row, col = divmod(worst, err.shape[1])
    rel = float(err[row, col] / scale[row, col]) if float(scale[row, col]) > 0 else math.inf
    column = exact[:, col].abs()
    lost = (stored[:, col] - exact[:, col]).abs() > u * column  # entries rounded outside the normal range
    held = column.clone()
    held[:-1] /= weight_divisor  # the magnitudes as stored
    big = float(held[lost].max() if bool(lost.any()) else held.max())
    raise ValueError(
        f"{name} cannot realize the target map in {dtype}: after rounding to {dtype} the stack misses output "
        f"{col} by {float(err[row, col]):.3g} (relative {rel:.2g}), more than rounding allows "
        f"({float(allowed[row, col]):.3g}): its entries for output {col} (up to {big:.3g} in magnitude) fall "
        f"below the smallest normal {dtype} ({torch.finfo(dtype).tiny:.3g}); scale the target map up"
        + (f" or keep this layer in a wider dtype such as {_WIDER[dtype]}" if dtype in _WIDER else "")
    )


def _slope_note(a: Tensor, gain: float, slope: float, dtype: torch.dtype, name: str) -> str | None:
    """Why a failure may be the LeakyReLU slope's: the layer after it holds ``a / (1 + slope)``, and this
    puts entries below the smallest normal number of ``dtype``; ``None`` when it does not. Only named when the
    stack fails (many such entries are harmless: the chain is computed from the stored values)."""
    tiny = torch.finfo(dtype).tiny
    size = a.abs()
    pushed = (size >= tiny) & (size / gain < tiny)  # normal before the division, below normal after it
    if gain == 1.0 or not bool(pushed.any()):
        return None
    smallest = float(size[pushed].min()) / gain
    wider = _WIDER.get(dtype)
    return (
        f"negative_slope={slope:g} divides the weights of {name} by 1 + negative_slope = {gain:.3g}, which "
        f"puts entries of {smallest:.3g} below the smallest normal {dtype} ({tiny:.3g}): use a smaller slope"
        + (f" or a wider dtype such as {wider}" if wider else "")
    )


def unit_input_radius(target_weight: Tensor, target_bias: Tensor | None, dtype: torch.dtype) -> float | None:
    """The largest ``r <= 1`` for which the target map's outputs stay finite in ``dtype`` for every input with
    ``max |x| <= r`` (``|T| r 1 + |t| <= max``); ``None`` if its bias alone (the output at ``x = 0``) leaves
    the range."""
    top = torch.finfo(dtype).max
    rows = target_weight.abs().sum(dim=1)
    offset = target_bias.abs() if target_bias is not None else torch.zeros_like(rows)
    if not bool((offset <= top).all()):
        return None
    if bool((rows + offset <= top).all()):
        return 1.0
    radius = (top - offset) / torch.where(rows > 0, rows, torch.ones_like(rows))
    return min(1.0, float(torch.where(rows > 0, radius, torch.ones_like(radius)).min()))


def check_forward_range(
    stored: Sequence[tuple[Tensor, Tensor | None]],
    prefixes: Sequence[Tensor],
    activations: Sequence[str | None],
    negative_slopes: Sequence[float],
    target_weight: Tensor,
    target_bias: Tensor | None,
    dtypes: Sequence[torch.dtype],
    names: Sequence[str],
) -> None:
    r"""Refuse a stack whose forward pass at initialization overflows where the target map does not.

    Every stored parameter may be finite and the last layer exact, yet a matrix product of the stored stack
    can still leave the range of its dtype: the last layer's dense weights cancel between hidden units, so
    its terms are larger than its outputs (a float32 identity scaled by 3e38 gave ``inf`` for ``x = 1``).
    Over the inputs with ``max |x| <= r`` (``r`` from :func:`unit_input_radius`: 1, or less where the target
    map itself overflows for unit inputs), a logical pre-activation ``z_l = x P_l + p_l`` is at most
    :math:`\bar z_l = r |P_l| 1 + |p_l|` entrywise (attained), and its Euclidean norm at most
    :math:`\zeta_l = \sigma_l r \sqrt{n} + \lVert p_l \rVert_2`, with :math:`\sigma_l^2` Gershgorin's bound
    on the largest eigenvalue of :math:`P_l P_l^T` (computed only where the entrywise bound fails). Of the
    twin units ``act(z)``, ``act(-z)`` one is ``0`` (ReLU) or both are small (LeakyReLU of slope ``a``):
    :math:`|act(z)| + |act(-z)| = g |z|` with :math:`g = 1 + a`. With
    :math:`M_i = \max(|W_i^{+}|, |W_i^{-}|)` (the columns of the two twins; ``|W_i|`` after no activation)
    every partial sum of row ``k`` of real layer ``i``, in any order of summation, is therefore at most

    .. math::

        s_{i,k} = g \min\left( (M_i \bar z_{i-1})_k,\; \lVert (M_i)_k \rVert_2\, \zeta_{i-1} \right)
                  + |b_{i,k}|

    (the first layer: :math:`\bar z = r 1`, :math:`\zeta = r \sqrt{n}`, :math:`g = 1`). A layer whose largest
    :math:`s_{i,k}` exceeds its dtype's largest finite value (less the rounding of ``fan_in + 1`` additions)
    raises: the bound is a worst case over the box, so a stack it accepts is finite for every such input. It
    is not tight: ``TransparentLinear(42, [64, 64])`` in float32 accepts identities scaled up to 4.2e37, where
    8192 random corners of the box stayed finite up to 1.5e38 (a factor 8 below the float32 maximum against
    2.3; at 4 -> 8 -> 4, 3.5 against 1.5). A target bias beyond the range (the output at ``x = 0``) raises as
    such. The sums bound only the terms ``|w| |act|``, where a LeakyReLU of slope :math:`a > 1` divides the
    next weights by :math:`g` but outputs ``act(-z) = -a z`` itself: its largest output :math:`a \max \bar
    z_l` (attained) must stay within the dtype of layer ``l`` too, or it raises, naming the slope.

    Args:
        stored: the real ``(weight, bias)`` of every layer as stored (``dtypes[i]``).
        prefixes (Sequence[Tensor[in + 1, h_l + 1]]): the homogeneous chain of the logical hidden layers up to
            each one, as the stack computes them (:func:`prefix_chains`, float64).
        activations: activation after hidden layer ``l``, length ``len(stored) - 1``.
        negative_slopes: LeakyReLU slope after hidden layer ``l`` (ignored for other activations).
        target_weight (Tensor[out, in]): the map (float64).
        target_bias (Tensor[out] | None): its bias.
        dtypes: storage dtype of each layer.
        names: how the message names each layer.

    Raises:
        ValueError: naming the first layer whose sums (or the LeakyReLU after it) can overflow, the bound,
            the radius and the dtype.
    """

    def wider(dtype: torch.dtype) -> str:
        return f", or keep the stack in a wider dtype such as {_WIDER[dtype]}" if dtype in _WIDER else ""

    def remedy(dtype: torch.dtype) -> str:
        return f"scale the target map down and the stack's output back up after it{wider(dtype)}"

    r = unit_input_radius(target_weight, target_bias, dtypes[-1])
    if r is None:
        assert target_bias is not None  # (a zero bias is in range)
        big = float(target_bias.abs().max())
        raise ValueError(
            f"{names[-1]}: the target map's output at x = 0 (its bias, up to {big:.3g} in magnitude) is "
            f"above the largest finite {dtypes[-1]} ({torch.finfo(dtypes[-1]).max:.3g}): the stack would "
            f"return inf for every input; {remedy(dtypes[-1])}"
        )
    in_features = target_weight.shape[1]

    def z_norm(i: int) -> float:  # the bound of ||z|| before layer i: the inputs', or a hidden layer's
        if i == 0:
            return r * math.sqrt(in_features)
        lin, offset = prefixes[i - 1][:in_features, :-1], prefixes[i - 1][in_features, :-1]
        sigma2 = float((lin @ lin.T).abs().sum(dim=1).max()) if lin.numel() else 0.0  # Gershgorin
        return math.sqrt(sigma2) * r * math.sqrt(in_features) + float(torch.linalg.vector_norm(offset))

    z = torch.full((in_features,), r, dtype=torch.float64, device="cpu")  # the inputs, then each layer's z
    for i, (w, b) in enumerate(stored):
        slope = negative_slopes[i - 1] if i > 0 and activations[i - 1] == "leaky_relu" else 0.0
        if slope > 1.0:  # act(-z) = -slope z is the largest activation, and not a term of the sums below
            prev = torch.finfo(dtypes[i - 1])
            reach = slope * (float(z.max()) if z.numel() else 0.0)
            if not reach <= prev.max / (1.0 + (stored[i - 1][0].shape[1] + 2) * prev.eps):
                raise ValueError(
                    f"{names[i - 1]}: at initialization the LeakyReLU after this layer (negative_slope="
                    f"{slope:g}) outputs up to {reach:.3g} for inputs with max |x| <= {r:.3g}, above the "
                    f"largest finite {dtypes[i - 1]} ({prev.max:.3g}), where the target map's outputs stay "
                    "finite: its forward pass would return inf; use a smaller negative_slope"
                    + wider(dtypes[i - 1])
                )
        size = w.double().abs()
        gain = 1.0
        if i > 0 and activations[i - 1] is not None:  # twin columns [act(z), act(-z)]
            h = size.shape[1] // 2
            gain = activation_gain(activations[i - 1], negative_slopes[i - 1])
            size = torch.maximum(size[:, :h], size[:, h:])
        offset = b.double().abs() if b is not None else size.new_zeros(size.shape[0])
        info = torch.finfo(dtypes[i])
        limit = info.max / (1.0 + (w.shape[1] + 1) * info.eps)
        sums = gain * (size @ z) + offset
        if not bool((sums <= limit).all()):  # then the norm bound (a product in_features^2 h: only here)
            # (a row norm that overflows float64 is inf: the entrywise bound then decides)
            by_norm = gain * torch.linalg.vector_norm(size, dim=1) * z_norm(i) + offset
            sums = torch.minimum(sums, by_norm)
        worst = float(sums.max()) if sums.numel() else 0.0
        if not worst <= limit:  # (NaN or inf included)
            raise ValueError(
                f"{names[i]}: at initialization the stack's sums in this layer reach {worst:.3g} for inputs "
                f"with max |x| <= {r:.3g}, above the largest finite {dtypes[i]} ({info.max:.3g}), where the "
                "target map's outputs stay finite: its forward pass would return inf (the dense last layer's "
                f"terms are larger than its outputs); {remedy(dtypes[i])}"
            )
        if i + 1 < len(stored):  # this hidden layer's logical pre-activations
            p = prefixes[i]
            z = r * p[:in_features, :-1].abs().sum(dim=0) + p[in_features, :-1].abs()


def transparent_parameters(
    in_features: int,
    hidden: Sequence[int],
    activations: Sequence[str | None],
    negative_slopes: Sequence[float],
    biases: Sequence[bool],
    target_weight: Tensor,
    target_bias: Tensor | None,
    dtypes: Sequence[torch.dtype],
    generator: torch.Generator | None = None,
    names: Sequence[str] | None = None,
) -> list[tuple[Tensor, Tensor | None]]:
    """Real ``(weight [out_real, in_real], bias [out_real] | None)`` of every layer, on CPU, in ``dtypes[i]``.

    Every parameter is checked after its cast: one that overflows ``dtypes[i]`` (e.g. a float16 stack
    towards a target with entries ~1e6), or a last layer that underflows so far that the stored stack misses
    the target (:func:`check_realized`), raises ``ValueError`` before the caller writes anything.

    Args:
        in_features: input width.
        hidden: logical hidden widths ``h_1 .. h_{k-1}`` (each ``>= in_features``; not checked here).
        activations: activation after hidden layer ``l`` (``None``, ``"relu"``, ``"leaky_relu"``),
            length ``k - 1``.
        negative_slopes: LeakyReLU slope after hidden layer ``l`` (ignored otherwise), length ``k - 1``.
        biases: whether each of the ``k`` layers has a bias (the last entry is the last layer's).
        target_weight (Tensor[out, in]): the map to reproduce (float64).
        target_bias (Tensor[out] | None): its bias (float64; ``None`` means zero).
        dtypes: storage dtype of each of the ``k`` layers.
        generator: source of the hidden draws (``None``: the global RNG).
        names: how error messages name each of the ``k`` layers (default ``"affine layer i"``).

    Raises:
        ValueError: if the hidden layers have no exact right inverse (:func:`solve_last`), or a parameter
            cannot be represented in its dtype.
    """
    k = len(hidden) + 1
    names = [f"affine layer {i}" for i in range(k)] if names is None else list(names)
    logical = draw_hidden(in_features, hidden, biases[: k - 1], generator, carry_offset=not biases[-1])
    effective: list[tuple[Tensor, Tensor]] = []
    stored: list[tuple[Tensor, Tensor | None]] = []
    notes: list[str | None] = []  # a large LeakyReLU slope that pushed a layer's weights below normal numbers
    for i, (a, b) in enumerate(logical):
        gain_in = activation_gain(activations[i - 1], negative_slopes[i - 1]) if i > 0 else 1.0
        doubled_in = i > 0 and activations[i - 1] is not None
        a_s = cast_representable(a / gain_in, dtypes[i], f"{names[i]} weight")
        if i > 0:
            notes.append(_slope_note(a, gain_in, negative_slopes[i - 1], dtypes[i], names[i]))
        b_s = cast_representable(b, dtypes[i], f"{names[i]} bias")
        effective.append((a_s.double() * gain_in, b_s.double()))
        w = torch.cat([a_s, -a_s], dim=1) if doubled_in else a_s
        bb = b_s
        if activations[i] is not None:
            w = torch.cat([w, -w], dim=0)
            bb = torch.cat([b_s, -b_s])
        stored.append((w, bb if biases[i] else None))
    prefixes = prefix_chains(effective, in_features)
    p = prefixes[-1]
    try:
        w_last, c_last = solve_last(p, target_weight, target_bias, last_bias=biases[-1])
    except ValueError as err:  # name the layer being solved, and a slope that may be the cause
        raise ValueError("; ".join([f"{names[-1]}: {err}", *filter(None, notes)])) from None
    gain = activation_gain(activations[-1], negative_slopes[-1])
    t_max = float(target_weight.abs().max()) if target_weight.numel() else 0.0
    b_max = 0.0 if target_bias is None or not target_bias.numel() else float(target_bias.abs().max())
    hint = (
        f" (max |target_weight| = {t_max:.3g}, max |target_bias| = {b_max:.3g}): scale the target map down"
        + (
            f" or keep this layer in a wider dtype such as {_WIDER[dtypes[-1]]}"
            if dtypes[-1] in _WIDER
            else ""
        )
    )
    w_s = cast_representable(w_last / gain, dtypes[-1], f"{names[-1]} weight", hint)
    c_s = cast_representable(c_last, dtypes[-1], f"{names[-1]} bias", hint)
    notes.append(_slope_note(w_last, gain, negative_slopes[-1], dtypes[-1], names[-1]))
    try:
        check_realized(
            p,
            homogeneous(target_weight, target_bias)[:, : target_weight.shape[0]],
            torch.cat([w_last.T, c_last[None]]),
            torch.cat([w_s.double().T * gain, c_s.double()[None]]),
            dtypes[-1],
            names[-1],
            weight_divisor=gain,
        )
    except ValueError as err:
        raise ValueError("; ".join([str(err), *filter(None, notes)])) from None
    if activations[-1] is not None:
        w_s = torch.cat([w_s, -w_s], dim=1)
    stored.append((w_s, c_s if biases[-1] else None))
    check_forward_range(
        stored, prefixes, activations, negative_slopes, target_weight, target_bias, dtypes, names
    )
    return stored
