"""The joint model: DeepLabV3+ logits refined by SpixelFCN superpixels, uniformization and a fusion stack.

Data flow (``mode="hard"``, fusion on)::

    seg_input ──► DeepLabV3+ ──────────────────────────────► S      (B, C, H, W) logits
    spixel_input ─► SpixelFCN ─► Q (B, 9, H, W) ─► hard_superpixels ─► ids (B, H, W)
    U = uniformize(S, ids)                       # superpixel-mean logits ("soft": soft_uniformize(S, Q))
    F = fusion([S, U])                           # 2C -> hidden -> C; transparent: starts as exactly F = U
    final = uniformize(F, ids)                   # one label per superpixel (consistency 100 %)

Fusion input and target map (a documented design choice, see ``docs/examples/pipeline.rst``): the stack sees
``[S, U(S)]`` and starts as the map ``[0 | I]`` ("take the uniformized half",
:func:`transparent_init.selection_weight`), so at step 0 the joint output equals the uniformized output of the
pretrained segmentation network up to float32 rounding, while training can learn to mix raw and
superpixel-averaged evidence per class. The authors fed 21 copies of the raw integer superpixel-id map
instead: those channels carry no class information, and their large unnormalized values (0..1023) inflate the
float32 error of the transparent stack about 100-fold.

Fusion initializations (``fusion_init``; all share the layer shapes ``2C -> 2h_1 -> ... -> C``, without an
activation ``2C -> h_1 -> ... -> C``; biases zero unless stated):

* ``"transparent"``: the paper's method: random hidden layers, last layer solved so the stack is exactly
  ``F = U`` (up to float32 rounding) and every layer gets a gradient from the first step.
* ``"xavier"``: Xavier (Glorot) normal weights: the pretrained output is destroyed at step 0.
* ``"kaiming"``: Kaiming (He) normal weights, fan-in, gain of the activation: also destroys it at step 0.
* ``"net2net"``: Net2Net-style identity layers, the last one selecting ``U``: the stack computes
  ``relu(U)`` with ReLU (every negative logit becomes 0; exact only without an activation).
* ``"zero_residual"``: ``F = U + f([S, U])`` with Kaiming hidden layers and the last layer (weight and bias)
  zero (ControlNet zero-convolution, ReZero): exact at step 0, but only the last layer gets a gradient at the
  first step.

Cost (see ``benchmarks/bench_joint.py``): the fusion applies its first layer to ``S`` and ``U`` separately
(``W [S; U] = W_S S + W_U U``: no concatenated copy) and runs forward and backward of its 1x1 layers as
matrix products in one autograd Function, chunk by chunk of pixels
(:func:`~examples.voc_joint.models.fused_stack.fused_stack`); the superpixel assignment is built without
validation (the grid ids are in range by construction), so ``refine`` has no host-device synchronisation.
In ``"hard"`` mode on the CPU (float32) the final uniformization is folded into the stack: ``uniformize(F)``
is the last layer applied to every superpixel's mean of the last hidden layer, decoded to the pixels, so
the last layer runs once per superpixel instead of once per pixel (``FusionStack.forward``'s
``uniformize``), and ``U`` is never made per pixel: the first layer's ``U`` half and bias run on the
superpixel means of ``S``, and every pixel adds its superpixel's result (``FusionStack.forward`` with
``u=None``). Options: ``channels_last`` (both networks and their inputs, or ``"spixelfcn"``: the
superpixel network only), ``recompute_fusion`` (on by default: the stack keeps only ``S`` for backward and
recomputes its activations and ``U`` there, chunk by chunk) and ``compile_refine`` (``torch.compile`` of
everything after the two networks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import sparse_ops as so
from sparse_ops._checks import check_same_device
from sparse_ops.soft import _no_autocast
from transparent_init import build_transparent_stack, net2net_identity_init_, selection_weight, xavier_init_
from transparent_init._checks import as_generator
from transparent_init.baselines import _fill as fill

from ._checks import (
    MAX_CELL,
    MAX_CLASSES,
    bounded_int,
    check_images,
    fusion_weights_problem,
    fusion_widths_problem,
    one_of,
    type_name,
)
from .fused_conv_stack import conv_products_available
from .fused_stack import Products, fused_stack

__all__ = [
    "DEFAULT_CHANNELS_LAST",
    "DEFAULT_FUSION_HIDDEN",
    "FUSION_INITS",
    "MODES",
    "ChannelsLast",
    "FusionActivation",
    "FusionInit",
    "FusionStack",
    "JointModel",
    "SegmentationOnly",
    "fusion_target_weight",
    "network_channels_last",
]

MODES = ("hard", "soft", "none")

FusionInit = Literal["transparent", "xavier", "kaiming", "net2net", "zero_residual"]
FusionActivation = Literal["relu", "leaky_relu"] | None
FUSION_ACTIVATIONS: tuple[str | None, ...] = ("relu", "leaky_relu", None)
FUSION_INITS: tuple[str, ...] = get_args(FusionInit)
#: The fusion stack's logical hidden widths by default (the paper's, 64 64, doubled by the ReLU: 42 -> 128 ->
#: 128 -> 21 here; the authors' code ends in 42 outputs and keeps the even 21); the default of
#: :class:`JointModel`, the training CLI's ``--fusion-hidden``, ``ablation.py`` and ``bench_joint.py``.
DEFAULT_FUSION_HIDDEN: tuple[int, ...] = (64, 64)

#: ``channels_last`` of :class:`JointModel`: ``True`` (both networks), ``"spixelfcn"`` (the superpixel network
#: only) or ``False``.
ChannelsLast = bool | Literal["spixelfcn"]

#: Default memory format per device type (``--channels-last`` left unset in the training CLI,
#: ``bench_joint.py``): where it wins, per network. CPU: SpixelFCN only (on the 2-core VM its training step
#: runs 12-13 % faster in channels_last at 128 and 256 px; DeepLabV3+'s 2 % slower at ResNet-18 / 128 px and
#: 5 % faster at ResNet-101 / 256 px, a backbone-dependent sign: ``bench_joint.py --formats``,
#: benchmarks/results/memory_format_20261130.json). CUDA: SpixelFCN only too (H200, ResNet-101, B=8, 512 px,
#: AMP, 2026-12-04: SpixelFCN's step alone 0.52-0.63x in channels_last, DeepLabV3+'s 1.08-1.11x, i.e. slower,
#: in two memory-format studies (paired; 1.06x by medians in the lever study); in the lever study the joint
#: step took 104.5 ms with both networks in channels_last, 101.1 ms with SpixelFCN alone, other options equal:
#: gpu_check_cuda_20261204_h200_first.json, gpu_check_cuda_20261204_h200.json and
#: joint_levers_cuda_20261204_h200.json in benchmarks/results/).
DEFAULT_CHANNELS_LAST: dict[str, ChannelsLast] = {"cpu": "spixelfcn", "cuda": "spixelfcn"}


def network_channels_last(channels_last: ChannelsLast, network: Literal["deeplab", "spixelfcn"]) -> bool:
    """Whether ``network`` runs in ``torch.channels_last`` under the option value ``channels_last``.

    Example:
        >>> network_channels_last("spixelfcn", "deeplab"), network_channels_last("spixelfcn", "spixelfcn")
        (False, True)
    """
    if not (isinstance(channels_last, bool) or channels_last == "spixelfcn"):
        raise ValueError(f"channels_last must be True, False or 'spixelfcn', got {channels_last!r}")
    if network not in ("deeplab", "spixelfcn"):  # ("Spixelfcn" was False, "foo" True, silently)
        raise ValueError(f"network must be 'deeplab' or 'spixelfcn', got {network!r}")
    return channels_last is True or (channels_last == "spixelfcn" and network == "spixelfcn")


def fusion_target_weight(num_classes: int) -> Tensor:
    """Target map ``[0 | I]`` of shape ``(C, 2C)``: the fusion stack starts by taking the uniformized half.

    Raises:
        ValueError: ``num_classes`` not a positive int.

    Example:
        >>> fusion_target_weight(2)
        tensor([[0., 0., 1., 0.],
                [0., 0., 0., 1.]])
    """
    c = bounded_int(num_classes, "num_classes", MAX_CLASSES)
    return selection_weight(2 * c, range(c, 2 * c), dtype=torch.float32)


def _fusion_hidden(hidden: object, num_classes: int, name: str, *, stack: bool = True) -> list[int]:
    """``hidden`` as the logical hidden widths of a fusion stack for ``num_classes`` classes, checked before
    any layer is built: a sequence of 1 to ``MAX_FUSION_DEPTH`` ints in ``[1, MAX_FUSION_WIDTH]`` (the bounds
    of a checkpoint's config); with ``stack`` (a stack is built of them) also each ``>= 2 x num_classes``
    (the transparent shapes every init shares) and at most ``FUSION_WEIGHTS_MAX`` weights in all. ``name``
    names the argument in the errors (``ValueError``; ``TypeError`` for a non-sequence)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {hidden!r}")
    widths = list(hidden)
    expected = fusion_widths_problem(widths)
    if expected is not None:
        raise ValueError(f"{name} must be {expected}, got {widths!r}")
    if stack and min(widths) < 2 * num_classes:
        raise ValueError(f"{name} must be ints >= 2 x num_classes = {2 * num_classes}, got {widths}")
    too_big = fusion_weights_problem(widths, num_classes) if stack else None
    if too_big is not None:  # before any layer is built (a crafted checkpoint's config builds one first)
        raise ValueError(f"{name} {widths} {too_big}")
    return widths


def _generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator))


class FusionStack(nn.Module):
    """The fusion of the joint model: ``[S, U] -> C`` per pixel, a stack of 1x1 layers, five initializations.

    Args:
        num_classes: ``C``; the input is ``[S, U]`` (``2C`` channels), the output ``C`` channels.
        hidden: logical hidden widths (each ``>= 2C``); with an activation the real widths are doubled (the
            transparent ``[z, -z]`` construction), and every initialization uses those same real widths.
        activation: ``"relu"``, ``"leaky_relu"`` or ``None``.
        init: one of :data:`FUSION_INITS` (see the module docstring; one line each).
        generator: seed or generator of the random draws.

    Shape:
        - Input: ``s (B, C, H, W)``, ``u (B, C, H, W)`` (any memory format).
        - Output: ``(B, C, H, W)``, contiguous (the layers run as matrix products on every image's pixels,
          in one autograd Function: :func:`~examples.voc_joint.models.fused_stack.fused_stack`).

    The parameters live in ``.layers`` (``nn.Conv2d`` 1x1 layers and activations), the same modules and
    state-dict keys for every ``init``; ``init="zero_residual"`` adds ``U`` to the stack's output.

    Raises:
        ValueError: ``num_classes`` not an int in ``[1, 1024]``, ``hidden`` not 1 to 16 widths in
            ``[1, 65536]`` with consecutive products of at most ``2**26`` (the bounds of :class:`JointModel`
            and of a checkpoint's config), a width below ``2 x num_classes`` (every init shares the
            transparent layer shapes, which need it), a stack of more than ``2**28`` weights, an unknown
            ``init`` or ``activation``.
        TypeError: ``hidden`` not a sequence.

    Example:
        >>> fuse = FusionStack(3, [6], "relu", "transparent", generator=0)
        >>> s, u = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
        >>> bool((fuse(s, u) - u).abs().max() < 1e-5)
        True
        >>> net2net = FusionStack(3, [6], "relu", "net2net")
        >>> bool(torch.equal(net2net(s, u), u.relu()))  # negative logits are lost through the ReLU
        True
    """

    _impl: str = "fused"  # benchmark knob (bench_joint.py --levers): "concat", "split", "nhwc" or "fused"
    _products: Products = "auto"  # benchmark knob: fused_stack's products ("mm": the matrix products only)
    #: benchmark knob: with ``uniformize``, the last layer on superpixel means where the stack's products
    #: are oneDNN convolutions (the CPU, float32); elsewhere the stack runs per pixel, then is uniformized
    _pool_last: bool = True
    #: On the CPU the stack runs over chunks of this many pixels (rows; in the fused form, of one image at a
    #: time; ``None``: all at once). glibc serves an allocation above its mmap threshold (at most 32 MB) with
    #: fresh pages every time, and first touching them costs about as much as the arithmetic here: one
    #: 128-wide hidden layer at B=2, 256 px is 67 MB. Chunks of 8192 rows (4 MB per layer) cut the NHWC form's
    #: forward + backward by 11 % at 128 px and 16 % at 256 px on the 2-core VM (paired; page faults per step
    #: 8 k -> 0 and 70 k -> 5 k). The fused form (the default) takes 16384 (one image at 128 px, 8 MB per
    #: layer): its joint step 0.987x / 0.988x the step with 8192 at ResNet-18 / 128 px and ResNet-101 / 256 px
    #: on the 2-core Intel Xeon VM (paired, 21 and 9 rounds, 2026-12-06); 0.99-1.00x on the AMD EPYC VM
    #: (2026-12-05). Not used on CUDA.
    cpu_chunk_rows: int | None = 16384

    def __init__(
        self,
        num_classes: int,
        hidden: Sequence[int],
        activation: FusionActivation = "relu",
        init: FusionInit = "transparent",
        *,
        generator: torch.Generator | int | None = 0,
    ) -> None:
        super().__init__()
        # its own argument's name (JointModel's own check names its fusion_init)
        init = cast(FusionInit, one_of(init, "init", FUSION_INITS))
        c = bounded_int(num_classes, "num_classes", MAX_CLASSES)
        # the bounds JointModel and a checkpoint's config have (unbounded, FusionStack(3, [2**40]) tried to
        # allocate 52 TB and fusion_target_weight(2**40) ran half a minute into a MemoryError)
        hidden = _fusion_hidden(hidden, c, "hidden")
        # the option itself, a plain str (a numpy str equal to one was stored as given)
        activation = cast(FusionActivation, one_of(activation, "activation", FUSION_ACTIVATIONS))
        self.num_classes = c
        self.init = init
        self.activation = activation
        # the transparent construction also fixes the layer shapes shared by every init
        self.layers = build_transparent_stack(
            2 * c,
            hidden,
            c,
            activation,
            conv=True,
            target_weight=fusion_target_weight(c),
            generator=generator,
        )
        #: the activation for :func:`fused_stack`: ``None`` (none), ``0.0`` (ReLU) or the LeakyReLU slope
        self._slope: float | None = None
        for m in self.layers:
            if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
                self._slope = float(getattr(m, "negative_slope", 0.0))
        if init != "transparent":
            self._reinit(init, _generator(generator))

    @property
    def convs(self) -> list[nn.Conv2d]:
        """The 1x1 layers, in order."""
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    @torch.no_grad()
    def _reinit(self, init: str, gen: torch.Generator | None) -> None:
        convs = self.convs
        if init == "xavier":
            xavier_init_(self.layers, generator=gen)
        elif init in ("kaiming", "zero_residual"):
            nonlin: Literal["linear", "leaky_relu"] = "linear" if self.activation is None else "leaky_relu"
            a = self._slope or 0.0
            for m in convs:
                # drawn on the generator's device and copied, as the library's baselines draw (an int seed
                # makes a CPU generator, which cannot draw into the weights of a stack built on CUDA)
                fill(
                    m.weight,
                    gen,
                    lambda t: nn.init.kaiming_normal_(t, a=a, nonlinearity=nonlin, generator=gen),
                )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            if init == "zero_residual":
                nn.init.zeros_(convs[-1].weight)
        elif init == "net2net":
            net2net_identity_init_(self.layers)  # hidden units 0..2C-1 carry act(act(...[S, U]))
            last = convs[-1].weight.view(self.num_classes, -1)
            last.zero_()
            last[:, : 2 * self.num_classes] = fusion_target_weight(self.num_classes)

    def _rows(self, rows_s: Tensor, rows_u: Tensor) -> Tensor:
        """The stack on rows ``(N, C)`` of ``S`` and ``U``: ``W_S S + W_U U`` as one accumulating product,
        then the later layers; bias, accumulation and activations in place."""
        c = self.num_classes
        layers = list(self.layers)
        first = layers[0]
        assert isinstance(first, nn.Conv2d)
        w1 = first.weight.flatten(1)
        z = (
            torch.addmm(first.bias, rows_s, w1[:, :c].t())
            if first.bias is not None
            else rows_s @ w1[:, :c].t()
        )
        z = z.addmm_(rows_u, w1[:, c:].t())
        for m in layers[1:]:
            if isinstance(m, nn.Conv2d):
                z = F.linear(z, m.weight.flatten(1), m.bias)
            elif isinstance(m, nn.LeakyReLU):
                z = F.leaky_relu_(z, m.negative_slope)
            else:
                z = F.relu_(z)
        return z

    def forward(
        self,
        s: Tensor,
        u: Tensor | None,
        *,
        recompute: bool = False,
        u_of: Callable[[Tensor], Tensor] | None = None,
        uniformize: tuple[Tensor, so.SuperpixelAssignment] | None = None,
    ) -> Tensor:
        """``F([S, U])``; see the class docstring.

        Args:
            s: ``S`` (B, C, H, W).
            u: ``U`` (B, C, H, W), or ``None`` with ``uniformize``: ``U`` is ``S`` uniformized over those
                superpixels (the hard mode's ``U``). Where the stack folds the uniformization (below), ``U``
                is then never made per pixel: the first layer's ``U`` half and bias run on the superpixel
                means of ``S``, and every pixel adds its superpixel's result.
            recompute: keep only ``S`` and ``U`` for backward and recompute the hidden activations there,
                chunk by chunk (:func:`~examples.voc_joint.models.fused_stack.fused_stack`; without autograd
                nothing is kept either way).
            u_of: with ``recompute``, the map that made ``U`` from ``S``: ``U`` is then not kept either but
                rebuilt from ``S`` in backward (its gradient still flows through ``u``); ignored otherwise
                (with ``u=None``, the assignment's uniformization where a per-pixel ``U`` is made).
            uniformize: ``(ids, assignment)``, hard superpixel ids ``(B, H, W)`` and their
                :class:`~sparse_ops.SuperpixelAssignment`: return ``F`` uniformized over them. The mean of an
                affine map is the map of the mean, so the fused form on the CPU runs the last layer on every
                superpixel's mean of the last hidden layer and decodes that (one product per superpixel
                instead of per pixel; the last hidden layer is kept for backward as packed sign bits) where
                its products are oneDNN convolutions (float32 on the CPU) and the assignment has no
                ``mask``; elsewhere the stack runs per pixel and its output is uniformized (a masked
                assignment's :meth:`~sparse_ops.SuperpixelAssignment.uniformize`: the means of the counted
                pixels, a superpixel without any left as it is). Same values up to float rounding (with an
                infinite weight, input or gradient, the folded form can give ``+-inf`` where the per-pixel
                form gives NaN, in the same places: it never forms a pixel's ``0 * inf``).

        Returns:
            ``F`` (B, C, H, W), contiguous in the fused form; with ``uniformize``, ``F`` uniformized.

        Raises:
            TypeError: ``s`` or ``u`` not a floating-point Tensor; ``recompute`` not a bool; ``u_of`` not
                callable; ``uniformize`` not a pair ``(ids Tensor, SuperpixelAssignment)``.
            ValueError: ``s`` not ``(B, num_classes, H, W)``, ``u`` not of its shape or on another device,
                ``uniformize``'s ids not ``(B, H, W)`` of ``s`` or on another device, ``recompute`` without
                the fused implementation, ``u=None`` without ``uniformize``.
        """
        for name, value in (("s", s), ("u", u)):
            if not (isinstance(value, Tensor) or (name == "u" and value is None)):
                raise TypeError(
                    f"{name} must be a Tensor of shape (B, num_classes={self.num_classes}, H, W), got "
                    f"{type(value).__name__}"
                )
        if s.dim() != 4 or s.shape[1] != self.num_classes:
            raise ValueError(
                f"s must have shape (B, num_classes={self.num_classes}, H, W), got {tuple(s.shape)}"
            )
        if u is not None and u.shape != s.shape:
            raise ValueError(f"u must have the shape of s {tuple(s.shape)}, got {tuple(u.shape)}")
        for name, value in (("s", s), ("u", u)):  # (integer or bool logits were cast to float silently,
            # complex ones lost their imaginary part with a warning only)
            if value is not None and not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor of logits, got dtype {value.dtype}")
        if u is not None:  # (was PyTorch's "cross-device copies are not allowed")
            check_same_device(s, "s", u, "u")
        if not isinstance(recompute, bool):  # (a str "no" turned the recomputation on)
            raise TypeError(f"recompute must be a bool, got {type_name(recompute)} ({recompute!r})")
        if u_of is not None and not callable(u_of):  # (was "'int' object is not callable" in backward)
            raise TypeError(
                f"u_of must be None or a callable (the map that made U from S), got {type_name(u_of)}"
            )
        if uniformize is not None:
            _check_uniformize(uniformize, s)
        if recompute and self._impl != "fused":
            raise ValueError(f"recompute needs the fused implementation, got _impl={self._impl!r}")
        if u is None and uniformize is None:
            raise ValueError(
                "u=None means U is S uniformized over the superpixels of uniformize: pass "
                "uniformize=(ids, assignment), got None"
            )
        out: Tensor
        c = self.num_classes
        # (not for a masked assignment: its means leave out the pixels it does not count, and its
        # uniformization leaves a superpixel with none unchanged, where the folded last layer pools every
        # pixel of the ids into its superpixel's mean and gives such a superpixel 0)
        folded = uniformize is not None and uniformize[1].mask is None and self.folds_uniformization(s.device)
        if u is None and not folded:  # U per pixel, rebuilt from S in backward when recomputing
            assert uniformize is not None
            # (U is rebuilt without the input checks, which S passed here: Dynamo refuses them in a backward)
            u, u_of = uniformize[1].uniformize(s), uniformize[1]._uniformize_unchecked
        if self._impl == "fused":  # forward and backward in one Function, chunk by chunk (fused_stack)
            convs = self.convs
            pool = None
            u_in = u
            if folded:
                assert uniformize is not None
                ids, enc = uniformize
                counts = enc.counts.to(convs[0].weight.dtype)
                pool = (
                    ids.flatten(1).long(),
                    torch.where(counts > 0, counts.reciprocal(), 0.0),
                )
                if u is None:  # U per superpixel: the means of S
                    u_in = enc.encode(s)
            assert u_in is not None
            out = fused_stack(
                s,
                u_in,
                [m.weight.flatten(1) for m in convs],
                [m.bias for m in convs],
                self._slope,
                chunk=self.cpu_chunk_rows if s.device.type == "cpu" else None,
                recompute=recompute,
                u_of=u_of,
                products=self._products,
                pool=pool,
            )
            if folded:  # out: the superpixel means of the stack's output
                assert uniformize is not None
                enc = uniformize[1]
                if self.init == "zero_residual":
                    out = _residual(out, u_in if u is None else enc.encode(u))
                return enc.decode(out)
        elif self._impl == "concat":  # the plain form: one 1x1 conv stack on torch.cat([S, U])
            assert u is not None  # (made above: only the fused form folds)
            out = self.layers(torch.cat([s, u], dim=1))
        elif self._impl == "split":  # W [S; U] = W_S S + W_U U, 1x1 convolutions
            assert u is not None  # (made above: only the fused form folds)
            layers = list(self.layers)
            first = layers[0]
            assert isinstance(first, nn.Conv2d)
            w = first.weight
            z = F.conv2d(s, w[:, :c]) + F.conv2d(u, w[:, c:], first.bias)
            for m in layers[1:]:
                z = m(z)
            out = z
        else:  # the same on NHWC rows: (B*H*W, C) matrix products, in-place bias/accumulate/activations
            assert u is not None  # (made above: only the fused form folds)
            b, _, h, w_ = s.shape
            rows_s = s.permute(0, 2, 3, 1).reshape(b * h * w_, c)  # a view when s is channels-last
            rows_u = u.permute(0, 2, 3, 1).reshape(b * h * w_, c)
            n = rows_s.shape[0]
            step = self.cpu_chunk_rows if s.device.type == "cpu" and self.cpu_chunk_rows else n
            # split, not slices: its backward is one cat of the chunks' gradients, where every slice's
            # backward writes a zero-filled full-size gradient and autograd adds them up (quadratic in the
            # number of chunks: +33 % fusion time at B=2, 256 px, 16 chunks)
            chunks = zip(rows_s.split(max(step, 1)), rows_u.split(max(step, 1)), strict=True)
            parts = [self._rows(chunk_s, chunk_u) for chunk_s, chunk_u in chunks]
            z = parts[0] if len(parts) == 1 else torch.cat(parts)
            out = z.view(b, h, w_, c).permute(0, 3, 1, 2)
        assert u is not None
        out = _residual(out, u) if self.init == "zero_residual" else out
        return out if uniformize is None else uniformize[1].uniformize(out)

    def folds_uniformization(self, device: torch.device) -> bool:
        """Whether :meth:`forward` with ``uniformize`` on ``device`` runs the last layer on superpixel means
        (the fused form with oneDNN products: float32 on the CPU) instead of uniformizing the per-pixel
        output, for an assignment without a ``mask`` (a masked one is never folded)."""
        return (
            self._impl == "fused"
            and self._pool_last
            and self._products != "mm"
            and conv_products_available(device, self.convs[0].weight.dtype)
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, init={self.init!r}"


def _check_uniformize(uniformize: object, s: Tensor) -> None:
    """:meth:`FusionStack.forward`'s ``uniformize``: a pair ``(ids, assignment)``, the ids ``(B, H, W)`` of
    ``s`` on its device and their :class:`~sparse_ops.SuperpixelAssignment` (an int unpacked into "cannot
    unpack non-iterable int object"; a pair of other things failed on a missing ``counts``; ids of another
    size named the stack's internal ``pool``)."""
    if not (
        isinstance(uniformize, tuple)
        and len(uniformize) == 2
        and isinstance(uniformize[0], Tensor)
        and isinstance(uniformize[1], so.SuperpixelAssignment)
    ):
        got = (
            f"a {len(uniformize)}-tuple of {', '.join(type_name(v) for v in uniformize)}"
            if isinstance(uniformize, tuple)
            else type_name(uniformize)
        )
        raise TypeError(
            "uniformize must be None or a pair (ids, assignment): hard superpixel ids, a Tensor (B, H, W), "
            f"and their sparse_ops.SuperpixelAssignment, got {got}"
        )
    ids, assignment = uniformize
    b, _, h, w = s.shape
    if ids.shape != (b, h, w):
        raise ValueError(
            f"uniformize's ids must have shape (B, H, W) = {(b, h, w)} of s, got {tuple(ids.shape)}"
        )
    if ids.device != s.device or assignment.device != s.device:
        raise ValueError(
            f"uniformize's ids and assignment must be on the device of s ({s.device}), got {ids.device} and "
            f"{assignment.device}"
        )


def _residual(out: Tensor, u: Tensor) -> Tensor:
    """``F + U`` of the zero-residual init, in the stack's dtype (``U`` is float32: in a stack converted to
    another dtype the sum was promoted to float32, where the other inits give the stack's dtype)."""
    return (out + u).to(out.dtype)


def _contract(
    logits: Tensor, seg_logits: Tensor, superpixels: Tensor | None, assoc: Tensor | None
) -> dict[str, Tensor | None]:
    return {"logits": logits, "seg_logits": seg_logits, "superpixels": superpixels, "assoc": assoc}


def _unwrapped_state(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """:class:`SegmentationOnly`'s state-dict hook: its keys (the last ones written, after its network's)
    lose the ``deeplab.`` after ``prefix``, in place and in order, and so do their metadata entries."""
    inner = prefix + "deeplab."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            metadata[prefix + key[len(inner) :] if key != inner[:-1] else prefix[:-1]] = metadata.pop(key)


def _wrapped_state(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """:class:`SegmentationOnly`'s load pre-hook: its keys (those under ``prefix``) get the ``deeplab.``
    back, in place (a copy that ``load_state_dict`` made), and so do their module versions: the metadata
    entries under ``prefix`` are copied under ``prefix + "deeplab."``, where the network's modules look them
    up (without them every BatchNorm read the file as one of before PyTorch 0.4.1 and filled missing step
    counters in silently, where the bare network refuses them). The metadata is the caller's own object
    (``load_state_dict`` copies the keys, not it): entries are added, none is changed or removed. Only a
    wrapper loaded by its own ``load_state_dict`` sees the metadata: nested in another module, it is handed
    a plain dict of its keys, and its network's modules then read no versions."""
    for key in [k for k in state if k.startswith(prefix)]:
        state[prefix + "deeplab." + key[len(prefix) :]] = state.pop(key)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        inner = prefix + "deeplab."
        for key in [k for k in metadata if (k + ".").startswith(prefix) and not (k + ".").startswith(inner)]:
            moved = inner[:-1] if key == prefix[:-1] else inner + key[len(prefix) :]
            metadata.setdefault(moved, metadata[key])


class SegmentationOnly(nn.Module):
    """Wrap a plain segmentation network (e.g. DeepLabV3+) in the pipeline's model contract.

    Shape:
        - Input: ``seg_input (B, 3, H, W)``; ``spixel_input`` is accepted and ignored.
        - Output: dict with ``logits`` = ``seg_logits`` ``(B, C, H, W)``,
          ``superpixels`` = ``assoc`` = ``None``.

    Raises:
        TypeError: ``deeplab`` not an ``nn.Module``.

    Its ``state_dict`` is the wrapped network's, keys without the ``deeplab.`` of the attribute, and
    ``load_state_dict`` takes such a one: what a ``seg`` checkpoint holds, next to the wrapped network's
    config (:func:`~examples.voc_joint.models.build.model_config` of the wrapper), so a wrapper saves and
    loads as its network does.

    Example:
        >>> import torch
        >>> m = SegmentationOnly(torch.nn.Conv2d(3, 21, 1))
        >>> out = m(torch.zeros(1, 3, 5, 7))
        >>> out["logits"].shape, out["superpixels"]
        (torch.Size([1, 21, 5, 7]), None)
        >>> list(m.state_dict()) == list(m.deeplab.state_dict())
        True
    """

    def __init__(self, deeplab: nn.Module) -> None:
        super().__init__()
        if not isinstance(deeplab, nn.Module):  # (was accepted, and failed at the first forward)
            raise TypeError(f"deeplab must be an nn.Module, got {type(deeplab).__name__} ({deeplab!r})")
        self.deeplab = deeplab
        self.register_state_dict_post_hook(_unwrapped_state)
        self.register_load_state_dict_pre_hook(_wrapped_state)

    def forward(self, seg_input: Tensor, spixel_input: Tensor | None = None) -> dict[str, Tensor | None]:
        s = self.deeplab(seg_input)
        return _contract(s, s, None, None)


class JointModel(nn.Module):
    """DeepLabV3+ + SpixelFCN joined by superpixel uniformization and a (transparent) fusion stack.

    Args:
        deeplab: segmentation network, ``(B, 3, H, W) -> (B, C, H, W)`` logits.
        spixelfcn: superpixel network, ``(B, 3, H, W) -> (B, 9, H, W)`` association (softmax over 9).
        num_classes: ``C``.
        cell_size: superpixel grid cell size in pixels (default: ``spixelfcn.cell_size``).
        mode: ``"hard"`` (uniformize with the argmax superpixel ids; no gradient into SpixelFCN from the
            segmentation loss), ``"soft"`` (first uniformization with the soft association: the segmentation
            loss reaches SpixelFCN) or ``"none"`` (no uniformization at all: an ablation).
        fusion: whether the fusion stack is used.
        fusion_hidden: logical hidden widths of the stack (each ``>= 2C``); the paper uses ``(64, 64)``.
        fusion_activation: ``"relu"``, ``"leaky_relu"`` or ``None``.
        fusion_init: ``"transparent"`` (the paper), ``"xavier"``, ``"kaiming"``, ``"net2net"`` or
            ``"zero_residual"`` (see :class:`FusionStack` and the module docstring).
        generator: seed or generator for the stack's random layers.
        channels_last: convert both networks and their inputs to ``torch.channels_last`` (``True``), only
            SpixelFCN and its input (``"spixelfcn"``) or neither (``False``); a runtime option, not part of
            :attr:`config`.
        recompute_fusion: in training, save only ``S`` (and ``Q`` in soft mode) for the fusion's backward and
            recompute the first uniformization and the stack's activations there (``"hard"``: inside the
            stack's Function, chunk by chunk; ``"soft"``: activation checkpointing; a model converted to
            another dtype keeps the hard ``U`` too: rebuilt from ``S`` in that dtype it would differ). Same
            values and gradients; on by default (runtime option).
        compile_refine: run :meth:`refine` through ``torch.compile`` (compiled on the first call; runtime
            option).

    Raises:
        ValueError: ``num_classes`` or ``cell_size`` (given, or read from ``spixelfcn.cell_size``) not an int
            in ``[1, 1024]``, ``fusion_hidden`` not 1 to 16 ints in ``[1, 65536]`` with consecutive
            products of at most ``2**26`` (the bounds of a checkpoint's config) or, with ``fusion``, with
            a width below ``2 x num_classes`` or more than ``2**28`` weights in all
            (:func:`~examples.voc_joint.models._checks.fusion_weights`), ``num_classes`` other than
            ``deeplab.config["num_classes"]``
            (:class:`DeepLabV3Plus`), or an unknown ``mode``, ``fusion_activation`` or ``fusion_init``; in
            :meth:`refine`, ``seg_logits`` without ``num_classes`` channels or ``assoc`` of another batch or
            image size or on another device; in ``forward``, what the networks' ``check_input`` refuses
            (where a network has one: :class:`DeepLabV3Plus`, :class:`SpixelFCN`; named ``seg_input`` or
            ``spixel_input``), e.g. an input on another device than the network's ``input_weight`` or one
            image in training mode.
        TypeError: a flag that is not a bool, ``deeplab`` or ``spixelfcn`` not an ``nn.Module``,
            ``fusion_hidden`` not a sequence, ``generator`` not ``None``, a ``torch.Generator`` or an int seed
            (with or without ``fusion``); in :meth:`refine`, ``seg_logits`` or ``assoc`` not a floating-point
            Tensor; in ``forward``, an input that is not a floating-point tensor or, outside
            ``torch.autocast``, of another dtype than its network's ``input_weight``.

    Shape:
        - Input: ``seg_input (B, 3, H, W)``, ``spixel_input (B, 3, H, W)``.
        - Output: dict (the pipeline's model contract): ``logits (B, C, H, W)`` final logits (constant on
          every superpixel unless ``mode="none"``), ``seg_logits (B, C, H, W)`` plain DeepLabV3+ logits,
          ``superpixels`` LongTensor ``(B, H, W)`` hard ids in ``[0, num_grid_cells)``,
          ``assoc (B, 9, H, W)``.

    The part after the two networks runs with autocast disabled on ``S`` and ``Q`` cast to float32, so mixed
    precision (``torch.autocast``) never breaks the transparency of the fusion stack. The stack computes in
    its parameters' dtype: a model converted as a whole (``.bfloat16()``, ``.half()``) runs its fusion in that
    dtype, and step 0 is then ``U(S)`` only up to its rounding (measured: 6e-3 of max|U| in bfloat16, 7e-4 in
    float16), so use autocast for mixed precision, not a converted model.

    Example:
        >>> from examples.voc_joint.models import DeepLabV3Plus, SpixelFCN
        >>> _ = torch.manual_seed(0)
        >>> joint = JointModel(DeepLabV3Plus(3, "resnet18", aspp_channels=8), SpixelFCN(8, 4), 3).eval()
        >>> out = joint(torch.randn(1, 3, 24, 24), torch.randn(1, 3, 24, 24))
        >>> ref = so.uniformize(out["seg_logits"], out["superpixels"], 9)  # step 0: exactly U(S)
        >>> bool((out["logits"] - ref).abs().max() < 1e-5), joint.config["fusion_init"]
        (True, 'transparent')
    """

    _validate: bool = False  # benchmark knob (bench_joint.py --levers): validate the ids every step (syncs)
    #: benchmark knob (bench_joint.py --levers): the hard fusion makes U itself, per superpixel where it folds
    #: the uniformization (``False``: U per pixel, made here and rebuilt from S in backward)
    _u_cells: bool = True

    def __init__(
        self,
        deeplab: nn.Module,
        spixelfcn: nn.Module,
        num_classes: int = 21,
        *,
        cell_size: int | None = None,
        mode: str = "hard",
        fusion: bool = True,
        fusion_hidden: Sequence[int] = DEFAULT_FUSION_HIDDEN,
        fusion_activation: FusionActivation = "relu",
        fusion_init: FusionInit = "transparent",
        generator: torch.Generator | int | None = 0,
        channels_last: ChannelsLast = False,
        recompute_fusion: bool = True,
        compile_refine: bool = False,
    ) -> None:
        super().__init__()
        # the plain options are stored in the config (a numpy scalar would make the checkpoint unreadable)
        mode = one_of(mode, "mode", MODES)
        fusion_init = cast(FusionInit, one_of(fusion_init, "fusion_init", FUSION_INITS))
        network_channels_last(channels_last, "deeplab")  # checks the value
        for name, flag in (
            ("fusion", fusion),
            ("recompute_fusion", recompute_fusion),
            ("compile_refine", compile_refine),
        ):
            if not isinstance(flag, bool):  # (numpy's bool is named "bool" too: its module says which)
                raise TypeError(f"{name} must be a bool, got {type_name(flag)} ({flag!r})")
        for name, network in (("deeplab", deeplab), ("spixelfcn", spixelfcn)):
            if not isinstance(network, nn.Module):  # (was accepted, and failed at the first forward)
                raise TypeError(f"{name} must be an nn.Module, got {type(network).__name__} ({network!r})")
        self.deeplab = deeplab
        self.spixelfcn = spixelfcn
        # the bounds of a checkpoint's config (models.build.SCHEMAS): what can be built can be loaded
        bounded_int(num_classes, "num_classes", MAX_CLASSES)
        if cell_size is None:  # SpixelFCN's (bounded by its constructor), 16 for a network without one
            # (not int(...) first: a float 8.5 or a str "8" was truncated or parsed silently)
            cell_size = bounded_int(getattr(spixelfcn, "cell_size", 16), "spixelfcn.cell_size", MAX_CELL)
        bounded_int(cell_size, "cell_size", MAX_CELL)
        net_config = getattr(deeplab, "config", None)  # DeepLabV3Plus's; any other network is trusted
        net_classes = net_config.get("num_classes") if isinstance(net_config, dict) else None
        if net_classes is not None and net_classes != num_classes:
            raise ValueError(
                f"num_classes must match the segmentation network's, got {num_classes} and deeplab's "
                f"{net_classes}"
            )
        self.num_classes = num_classes
        self.cell_size = cell_size
        self.mode = mode
        # recorded in the config also without a stack (a model rebuilt from it must accept them): checked here
        fusion_hidden = _fusion_hidden(fusion_hidden, num_classes, "fusion_hidden", stack=fusion)
        fusion_activation = cast(
            FusionActivation, one_of(fusion_activation, "fusion_activation", FUSION_ACTIVATIONS)
        )
        self.fusion: FusionStack | None = None
        if not fusion:  # checked as the stack would (an object() or "abc" was accepted without one)
            as_generator(generator)
        if fusion:
            self.fusion = FusionStack(
                self.num_classes, fusion_hidden, fusion_activation, fusion_init, generator=generator
            )
        self.config: dict[str, Any] = {
            "num_classes": self.num_classes,
            "cell_size": self.cell_size,
            "mode": mode,
            "fusion": fusion,
            "fusion_hidden": [int(h) for h in fusion_hidden],
            "fusion_activation": fusion_activation,
            "fusion_init": fusion_init,
        }
        self.channels_last = channels_last
        self.recompute_fusion = recompute_fusion
        self.compile_refine = compile_refine
        self._compiled: Any = None
        if network_channels_last(channels_last, "deeplab"):
            self.deeplab.to(memory_format=torch.channels_last)
        if network_channels_last(channels_last, "spixelfcn"):
            self.spixelfcn.to(memory_format=torch.channels_last)

    def __getstate__(self) -> dict[str, Any]:
        # the compiled refine is bound to this instance: copies and pickles compile their own on first use
        state: dict[str, Any] = super().__getstate__()
        state["_compiled"] = None
        return state

    def superpixels(self, assoc: Tensor) -> Tensor:
        """Hard superpixel ids ``(B, H, W)`` from the association (argmax over the 9 neighbouring cells)."""
        ids = so.hard_superpixels(assoc.detach(), self.cell_size, validate=self._validate)
        assert isinstance(ids, Tensor)  # without return_counts
        return ids

    def assignment(self, ids: Tensor) -> so.SuperpixelAssignment:
        """Pixel-to-superpixel assignment of grid ids (not validated: in range by construction, no sync)."""
        n = so.num_grid_cells(ids.shape[-2], ids.shape[-1], self.cell_size)
        return so.SuperpixelAssignment(ids, n, validate=self._validate)

    def _uniformized(self, s: Tensor, q: Tensor, enc: so.SuperpixelAssignment | None) -> Tensor:
        if self.mode == "hard":
            assert enc is not None
            return enc.uniformize(s)
        if self.mode == "soft":
            return so.soft_uniformize(s, q, self.cell_size, validate=self._validate)
        return s

    def _mix(self, s: Tensor, q: Tensor, enc: so.SuperpixelAssignment | None, ids: Tensor) -> Tensor:
        """``U`` and the fusion ``F([S, U])`` (``U`` alone without a fusion stack); in ``"hard"`` mode the
        fusion makes ``U`` itself (per superpixel where it can) and returns ``F`` uniformized already."""
        if self.fusion is None:
            return self._uniformized(s, q, enc)
        if self.mode == "hard":
            assert enc is not None
            return self.fusion(s, self._hard_u(s, enc)[0], uniformize=(ids, enc))
        return self.fusion(s, self._uniformized(s, q, enc))

    def _hard_u(
        self, s: Tensor, enc: so.SuperpixelAssignment
    ) -> tuple[Tensor | None, Callable[[Tensor], Tensor] | None]:
        """``(u, u_of)`` for the hard fusion: ``(None, None)`` where the stack makes ``U`` itself from ``S``
        (the default), else the per-pixel ``U`` and the map that rebuilds it from ``S`` when recomputing."""
        return (None, None) if self._u_cells else (enc.uniformize(s), enc._uniformize_unchecked)

    def _refine(self, s: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        ids = self.superpixels(q)
        # one pixel-to-superpixel assignment serves both uniformizations
        enc = None if self.mode == "none" else self.assignment(ids)
        if self.recompute_fusion and self.fusion is not None and torch.is_grad_enabled():
            if self.mode == "hard" and self.fusion._impl == "fused":
                # the stack's Function recomputes its activations chunk by chunk; the hard U is S's superpixel
                # means, or, where a per-pixel U is made, rebuilt from S (its graph keeps only the assignment)
                assert enc is not None
                u, u_of = self._hard_u(s, enc)
                x = self.fusion(s, u, recompute=True, u_of=u_of, uniformize=(ids, enc))
            else:  # activation checkpointing of U and the stack (the soft U would keep S and Q blocks)
                x = checkpoint(self._mix, s, q, enc, ids, use_reentrant=False, preserve_rng_state=False)
        else:
            x = self._mix(s, q, enc, ids)
        if enc is not None and not (self.mode == "hard" and self.fusion is not None):
            x = enc.uniformize(x)  # (the hard fusion uniformized its output)
        return x, ids

    def refine(self, seg_logits: Tensor, assoc: Tensor) -> tuple[Tensor, Tensor]:
        """Everything after the two networks: ``(final logits, hard ids)`` from ``S`` and ``Q`` (cast to
        float32; the fusion stack computes in its parameters' dtype, float32 unless converted).

        Raises:
            TypeError: ``seg_logits`` or ``assoc`` not a floating-point Tensor.
            ValueError: ``seg_logits`` not ``(B, num_classes, H, W)``, ``assoc`` not ``(B, 9, H, W)`` of it or
                on another device.
        """
        for name, value in (("seg_logits", seg_logits), ("assoc", assoc)):
            if not isinstance(value, Tensor):  # (was "'list' object has no attribute 'dim'")
                raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")
        if seg_logits.dim() != 4 or seg_logits.shape[1] != self.num_classes:
            raise ValueError(
                f"seg_logits must have shape (B, num_classes={self.num_classes}, H, W), got "
                f"{tuple(seg_logits.shape)}"
            )
        if (
            assoc.dim() != 4
            or assoc.shape[0] != seg_logits.shape[0]
            or assoc.shape[2:] != seg_logits.shape[2:]
        ):
            raise ValueError(
                f"assoc must have shape (B, 9, H, W) with the B, H, W of seg_logits "
                f"{tuple(seg_logits.shape)}, got {tuple(assoc.shape)}"
            )
        for name, value in (("seg_logits", seg_logits), ("assoc", assoc)):  # before the cast to float32,
            # which took integer, bool and complex tensors (a bool association, complex logits) silently
            if not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        # (the ops below named their own arguments, x and superpixels)
        check_same_device(seg_logits, "seg_logits", assoc, "assoc")
        s, q = seg_logits.float(), assoc.float()
        if self.compile_refine:
            if self._compiled is None:
                self._compiled = torch.compile(self._refine, dynamic=False)
            out: tuple[Tensor, Tensor] = self._compiled(s, q)
            return out
        return self._refine(s, q)

    def forward(self, seg_input: Tensor, spixel_input: Tensor) -> dict[str, Tensor | None]:
        # before either network runs, naming the input (the networks' forward calls it x): their own
        # checks where they have them (DeepLabV3Plus, SpixelFCN: also the device and dtype of their first
        # weights, and a single image in training mode)
        for name, network, images in (
            ("seg_input", self.deeplab, seg_input),
            ("spixel_input", self.spixelfcn, spixel_input),
        ):
            check = getattr(network, "check_input", None)
            if callable(check):
                check(images, name)
            else:
                check_images(images, name)
        (b1, _, h1, w1), (b2, _, h2, w2) = seg_input.shape, spixel_input.shape
        if (b1, h1, w1) != (b2, h2, w2):
            raise ValueError(
                "seg_input and spixel_input must have the same batch size and image size, got "
                f"{tuple(seg_input.shape)} and {tuple(spixel_input.shape)}"
            )
        if network_channels_last(self.channels_last, "deeplab"):
            seg_input = seg_input.contiguous(memory_format=torch.channels_last)
        if network_channels_last(self.channels_last, "spixelfcn"):
            spixel_input = spixel_input.contiguous(memory_format=torch.channels_last)
        s = self.deeplab(seg_input)
        q = self.spixelfcn(spixel_input)
        if s.shape[-2:] != q.shape[-2:]:  # (the inputs' sizes are equal: checked above)
            raise ValueError(
                "deeplab and spixelfcn must give outputs of their inputs' size "
                f"{tuple(seg_input.shape[-2:])}, got seg_logits of size {tuple(s.shape[-2:])} and assoc of "
                f"size {tuple(q.shape[-2:])}"
            )
        with _no_autocast(s.device):
            final, ids = self.refine(s, q)
        return _contract(final, s, ids, q)
