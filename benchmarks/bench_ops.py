"""Benchmark: the public superpixel ops that had no benchmark, each against the obvious alternative.

Every op runs against what a user would write without the library, on the same inputs, checked equal before
timing: float ops in float64 (outputs and the gradient; relative difference, max |ours - alternative| over
max |alternative|, at most ``CHECK_TOLERANCE``), integer ops exactly (on the float32 inputs that are timed).
Both are timed in float32, forward + backward where the op is differentiable (w.r.t. the input named in the
table), forward otherwise. The ops and their alternatives (written here):

* ``pool_mean`` / ``pool_sum`` / ``pool_max``: :func:`sparse_ops.superpixel_pool` (``reduce="mean"``,
  ``"sum"``, ``"max"``; w.r.t. the features) against ``scatter_add`` into ``torch.zeros(B, C, N_s)`` over the
  label map broadcast from one channel to ``C`` (``expand``: no copy; the mean: those sums over the pixel
  counts, one more ``scatter_add`` of ones, as a user writes it) or ``scatter_reduce("amax",
  include_self=False)``; the alternative returns its ``[B, N_s, C]`` result as a transposed view (no copy
  either). Until 2026-12-06 the mean's alternative was ``scatter_reduce("mean")``, a slower kernel on the CPU
  (an outside review: not what a user would pick). B=4, C=21, 512x512, N_s=1024 Voronoi cells (SLIC-like:
  the irregular labels of ``bench_uniformize.py``).
* ``unpool``: :func:`sparse_ops.superpixel_unpool` (w.r.t. the pooled vectors) against ``torch.gather`` over
  the same broadcast index; same sizes.
* ``pool_mean_reused`` / ``unpool_reused``: the same two ops through a
  :class:`sparse_ops.SuperpixelAssignment` built once outside the timing (``.pool(x, "mean")``,
  ``.decode(pooled)``), as a training loop that applies several ops to one label map uses them; the
  functional ops above build it (a sort of the ids) in every call.
* ``spixel_loss``: :func:`sparse_ops.spixel_loss` (a label map, 21 classes, ``renormalize=False``; w.r.t. the
  association) against the public SpixelFCN recipe: an explicit one-hot of the labels, concatenated with the
  pixel coordinates, pooled and unpooled by 9 shifts (``nine_shift_uniformize`` of ``bench_soft.py``), then
  the cross-entropy and the position distance, means over the pixels. B=4, 512x512, cell 16.
* ``relabel_contiguous``: :func:`sparse_ops.relabel_contiguous` against ``torch.unique(return_inverse=True)``
  image by image; ids ``3 v + 1`` of the Voronoi map above (gaps, no 0).
* ``enforce_connectivity``: :func:`sparse_ops.enforce_connectivity` (``min_size=1``: split into 4-connected
  pieces, numbered in row-major order of their first pixel) against scikit-image's ``measure.label`` of each
  image (``background=-1, connectivity=1``: the same pieces and numbering, from 1), one call per image; the
  library builds one graph of each map (an edge between equal 4-neighbours) for scipy's
  ``connected_components`` (until 2026-12-06: ``scipy.ndimage.label`` label by label, in bounding boxes).
  Until 2026-12-06 the alternative was a loop over every label with ``ndimage.label`` of the whole image's
  mask, far slower than what a user would pick (an outside review). B=4, 256x256, the arg-max map of the
  synthetic association below at cell 16 (about 1.7 pieces per superpixel, counted by hand, not kept in the
  JSON).
* ``hard_superpixels``: :func:`sparse_ops.hard_superpixels` against ``argmax`` over the 9 candidates (those
  outside the image set to ``-inf``, the channels put in the library's tie order, centre first) and a
  ``gather`` of the 9 neighbour cell ids (``neighbour_cell_ids``). B=4, 512x512, cell 16.
* ``superpixel_cam`` / ``superpixel_global_average`` (SPN; w.r.t. the features, at the label map's size,
  C=21 channels, K=21 classes): against the superpixel means by ``scatter_add`` over the pixel counts (as the
  mean pool's alternative), then ``F.linear`` and a ``gather`` back to the pixels (CAM), or the mean over the
  non-empty superpixels (global average). B=4, 256x256, N_s=256 Voronoi cells. Until 2026-12-06 the
  alternative was a dense one-hot ``[B, N_s, H W]`` mask and ``bmm`` (268 MB at this size), far slower than
  this one (an outside review).

The association of ``spixel_loss`` and ``hard_superpixels`` is synthetic but shaped like a trained network's:
the logits favour the candidate cells with the nearest centres, plus smooth noise.

Memory: on the CPU the table's figure is the peak of the tensor bytes live at once during one run
(``peak_tensor_mib``, PyTorch's CPU allocator, ``_harness.tensor_peak_mib``: the same in every process, blind
to numpy's arrays, which only ``enforce_connectivity`` and its alternative hold); on CUDA
``torch.cuda.max_memory_allocated`` above the inputs. Every (op, implementation) runs in a fresh subprocess,
so that the JSON also keeps its peak resident memory (the growth of the peak resident set size above the
resident size after the inputs are made, ``peak_rss_growth_mib``; it moves by 10-40 MiB with the process's
history; ``--in-process``: all in this process, as the GPU check does, and no such figure). ``--quick`` (tiny
shapes, 2 repeats) always runs in this process: 20 interpreter starts would take most of its time, and
resident-set figures at those sizes measure lazy initialisation. Medians over ``--repeats`` runs (half as
many, at least 3, for ``spixel_loss``, whose alternative takes seconds) after one warm-up run (three on
CUDA), timed with ``time.perf_counter`` on the CPU and CUDA events on CUDA (``benchmarks/_harness.py``);
``torch.set_num_threads(2)`` (``--threads``). Two ratios per op, ours over the alternative: the ratio of the
medians (from the two subprocesses) and the paired ratio: in the library's subprocess, after its memory
reading, the two alternate for as many rounds as it timed runs (in alternating order), and the figure is the
median of the per-round ratios (robust to the drift of a shared machine).

Usage::

    python benchmarks/bench_ops.py            # full run: results/bench_ops_cpu_<UTC date-time>.json
    python benchmarks/bench_ops.py --quick    # smoke run on small shapes (no JSON unless --out)
    python benchmarks/bench_ops.py --ops pool_mean,spixel_loss --repeats 21
    python benchmarks/bench_ops.py --device cuda --in-process --out bench_ops_cuda.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# imports after the path set-up: noqa E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _atomic import RESULTS, result_path, stamped_result, write_json  # noqa: E402
from _harness import (  # noqa: E402
    PeakMemory,
    cell,
    check_counts,
    check_lists,
    check_output,
    cli_device,
    environment,
    memory_fields,
    nan_max,
    paired_times,
    peak_mib,
    run_script,
    time_ms,
    warmup_runs,
)
from bench_soft import nine_shift_uniformize  # noqa: E402
from bench_uniformize import make_labels  # noqa: E402

from sparse_ops import (  # noqa: E402
    NEIGHBOUR_OFFSETS,
    SuperpixelAssignment,
    enforce_connectivity,
    hard_superpixels,
    neighbour_cell_ids,
    pixel_xy,
    relabel_contiguous,
    spixel_loss,
    superpixel_cam,
    superpixel_global_average,
    superpixel_pool,
    superpixel_unpool,
)

#: Largest relative difference (max |ours - alternative| / max |alternative|, per output and gradient) that
#: passes the float64 check.
CHECK_TOLERANCE = 1e-10
Inputs = dict[str, Any]


# ------------------------------------------------------------------------------------------- inputs
def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _voronoi(cfg: dict) -> torch.Tensor:
    """Irregular SLIC-like labels (Voronoi cells of jittered grid seeds), ids in ``[0, N_s)``."""
    return make_labels("voronoi", cfg["B"], cfg["H"], cfg["W"], cfg["N_s"])


def _grid_assoc(cfg: dict, g: torch.Generator) -> torch.Tensor:
    """A synthetic association like a trained network's: the logits favour the candidate cells with the
    nearest centres, plus smooth noise (drawn at 1/8 of the resolution, bilinearly upsampled), softmax over
    the 9. Its arg-max map has grid-like superpixels with wiggly borders and stray pieces (about 1.7
    4-connected pieces per superpixel at 256x256, cell 16; counted by hand, not kept in the JSON)."""
    b, h, w, s = cfg["B"], cfg["H"], cfg["W"], cfg["S"]
    y, x = torch.arange(h).view(h, 1) + 0.5, torch.arange(w).view(1, w) + 0.5
    cell_y, cell_x = (torch.arange(h) // s).view(h, 1), (torch.arange(w) // s).view(1, w)
    dist2 = [
        ((y - (cell_y + dy + 0.5) * s) ** 2 + (x - (cell_x + dx + 0.5) * s) ** 2) / s**2
        for dy, dx in NEIGHBOUR_OFFSETS
    ]
    noise = torch.randn(b, 9, max(1, h // 8), max(1, w // 8), generator=g)
    noise = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    return torch.softmax(-4.0 * torch.stack(dist2) + 0.5 * noise, dim=1)


def _features(cfg: dict, g: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.randn(cfg["B"], cfg["C"], cfg["H"], cfg["W"], generator=g)
    return x.to(device=device, dtype=dtype).requires_grad_()


def inputs_pool(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    g = _generator()
    x = _features(cfg, g, dtype, device)
    grad = torch.randn(cfg["B"], cfg["N_s"], cfg["C"], generator=g).to(device=device, dtype=dtype)
    sp = _voronoi(cfg).to(device)
    # the assignment built once (a training loop reuses it for every op on the same label map)
    return {"x": x, "sp": sp, "n": cfg["N_s"], "grad": grad, "a": SuperpixelAssignment(sp, cfg["N_s"])}


def inputs_unpool(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    g = _generator()
    pooled = torch.randn(cfg["B"], cfg["N_s"], cfg["C"], generator=g).to(device=device, dtype=dtype)
    grad = torch.randn(cfg["B"], cfg["C"], cfg["H"], cfg["W"], generator=g).to(device=device, dtype=dtype)
    sp = _voronoi(cfg).to(device)
    a = SuperpixelAssignment(sp, cfg["N_s"])
    return {"pooled": pooled.requires_grad_(), "sp": sp, "grad": grad, "a": a}


def inputs_loss(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    g = _generator()
    assoc = _grid_assoc(cfg, g).to(device=device, dtype=dtype).requires_grad_()
    b, k, h, w = cfg["B"], cfg["K"], cfg["H"], cfg["W"]
    regions = torch.randn(b, k, max(1, h // 32), max(1, w // 32), generator=g)  # blobby class regions
    target = F.interpolate(regions, size=(h, w), mode="bilinear", align_corners=False).argmax(1)
    return {"assoc": assoc, "target": target.to(device), "S": cfg["S"], "K": k}


def inputs_relabel(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    return {"sp": (3 * _voronoi(cfg) + 1).to(device)}


def inputs_hard(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    return {"assoc": _grid_assoc(cfg, _generator()).to(device=device, dtype=dtype), "S": cfg["S"]}


def inputs_connectivity(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    assoc = _grid_assoc(cfg, _generator()).to(device=device, dtype=dtype)
    return {"labels": hard_superpixels(assoc, cfg["S"], validate=False)}


def inputs_spn(cfg: dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    g = _generator()
    x = _features(cfg, g, dtype, device)
    weight = (torch.randn(cfg["K"], cfg["C"], generator=g) / cfg["C"] ** 0.5).to(device=device, dtype=dtype)
    bias = torch.randn(cfg["K"], generator=g).to(device=device, dtype=dtype)
    b, k, h, w = cfg["B"], cfg["K"], cfg["H"], cfg["W"]
    grad_cam = torch.randn(b, k, h, w, generator=g).to(device=device, dtype=dtype)
    grad_avg = torch.randn(b, cfg["C"], generator=g).to(device=device, dtype=dtype)
    sp = _voronoi(cfg).to(device)
    return {
        "x": x,
        "sp": sp,
        "n": cfg["N_s"],
        "weight": weight,
        "bias": bias,
        "grad_cam": grad_cam,
        "grad_avg": grad_avg,
    }


# ------------------------------------------------------------------------------------------- alternatives
def _broadcast_index(sp: torch.Tensor, channels: int) -> torch.Tensor:
    """The label map ``[B, H, W]`` as a ``[B, C, H W]`` index: one channel broadcast over C (no copy)."""
    b = sp.shape[0]
    return sp.reshape(b, 1, -1).expand(b, channels, -1)


def _counts(sp: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The pixel count of every superpixel, ``[B, N_s]``: one ``scatter_add`` of ones."""
    b = sp.shape[0]
    ones = torch.ones(1, 1, dtype=dtype, device=sp.device).expand(b, sp[0].numel())
    return torch.zeros(b, n, dtype=dtype, device=sp.device).scatter_add(1, sp.reshape(b, -1), ones)


def scatter_pool(x: torch.Tensor, sp: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    """``scatter_add`` (sum; the mean: the sums over the pixel counts, as a user writes it, PyTorch's
    ``scatter_reduce("mean")`` being the slower kernel) or ``scatter_reduce("amax")`` into zeros;
    ``[B, N_s, C]`` as a view (the mean: a new tensor)."""
    b, c = x.shape[:2]
    index, src = _broadcast_index(sp, c), x.reshape(b, c, -1)
    out = x.new_zeros(b, c, n)
    if reduce in ("sum", "mean"):
        out = out.scatter_add(2, index, src)
        if reduce == "mean":  # an empty superpixel stays 0
            return out.transpose(1, 2) / _counts(sp, n, x.dtype).clamp_min(1).unsqueeze(2)
    else:  # include_self=False: the zeros do not count (an empty superpixel stays 0)
        out = out.scatter_reduce(2, index, src, "amax", include_self=False)
    return out.transpose(1, 2)


def gather_unpool(pooled: torch.Tensor, sp: torch.Tensor) -> torch.Tensor:
    b, _, c = pooled.shape
    out = torch.gather(pooled.transpose(1, 2), 2, _broadcast_index(sp, c))
    return out.view(b, c, *sp.shape[1:])


def onehot_nine_shift_loss(
    assoc: torch.Tensor, target: torch.Tensor, cell_size: int, num_classes: int, pos_weight: float = 0.003
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The public SpixelFCN recipe: one-hot labels and pixel coordinates through 9-shift pool and unpool."""
    b, _, h, w = assoc.shape
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(assoc.dtype)
    xy = pixel_xy(h, w, batch_size=b, dtype=assoc.dtype, device=assoc.device)
    recon = nine_shift_uniformize(torch.cat([onehot, xy], 1), assoc, cell_size)
    semantic = -(onehot * torch.log(recon[:, :num_classes] + 1e-8)).sum(1).mean()
    position = (recon[:, num_classes:] - xy).norm(dim=1).mean()
    return semantic + pos_weight / cell_size * position, semantic, position


def unique_relabel(sp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(return_inverse=True)`` image by image."""
    ids = torch.empty(sp.shape, dtype=torch.long, device=sp.device)
    counts = []
    for b in range(sp.shape[0]):
        values, inverse = torch.unique(sp[b], return_inverse=True)
        ids[b] = inverse
        counts.append(values.numel())
    return ids, torch.tensor(counts, device=sp.device)


def skimage_connectivity(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``skimage.measure.label`` of every image (4-connected pieces of equal labels, no background), which
    numbers the pieces in row-major order of their first pixel from 1: one call per image."""
    from skimage.measure import label

    arr = labels.cpu().numpy()
    out = np.empty(arr.shape, dtype=np.int64)
    counts = []
    for b in range(arr.shape[0]):
        out[b] = label(arr[b], background=-1, connectivity=1) - 1  # (the ids are >= 0: no background)
        counts.append(int(out[b].max()) + 1)
    return torch.from_numpy(out).to(labels.device), torch.tensor(counts, device=labels.device)


#: The library's tie rule (documented in :func:`sparse_ops.hard_superpixels`): the centre candidate first,
#: then TL, T, TR, L, R, BL, B, BR. ``argmax`` returns the first maximum, so the channels go in this order.
TIE_ORDER = (4, 0, 1, 2, 3, 5, 6, 7, 8)


def argmax_hard(assoc: torch.Tensor, cell_size: int) -> torch.Tensor:
    b, _, h, w = assoc.shape
    ids, valid = neighbour_cell_ids(h, w, cell_size, device=assoc.device)
    order = torch.tensor(TIE_ORDER, device=assoc.device)
    scores = assoc.index_select(1, order).masked_fill(~valid[order], float("-inf"))
    best = scores.argmax(1, keepdim=True)
    return ids[order].expand(b, 9, h, w).gather(1, best)[:, 0]


def scatter_cam(
    x: torch.Tensor, sp: torch.Tensor, n: int, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The superpixel means by ``scatter_add`` over the counts, their scores by ``F.linear``, and each pixel's
    superpixel's scores by ``gather``."""
    scores = F.linear(scatter_pool(x, sp, n, "mean"), weight, bias)  # [B, N_s, K]
    return gather_unpool(scores, sp)


def scatter_global_average(x: torch.Tensor, sp: torch.Tensor, n: int) -> torch.Tensor:
    """The mean over the non-empty superpixels of their means (``scatter_add`` over the counts, counted once
    for both)."""
    counts = _counts(sp, n, x.dtype).unsqueeze(2)
    means = scatter_pool(x, sp, n, "sum") / counts.clamp_min(1)
    present = (counts > 0).to(x.dtype)
    return (means * present).sum(1) / present.sum(1).clamp_min(1)


# ------------------------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    """One op: the library call and the alternative on the same inputs, and what is differentiated."""

    op: str  # the library call as shown in the table
    alternative: str  # the alternative's name
    ours: Callable[[Inputs], Any]
    alt: Callable[[Inputs], Any]
    inputs: Callable[[dict, torch.device, torch.dtype], Inputs]
    full: dict
    quick: dict
    grad_of: str | None = None  # the input differentiated (None: forward only)
    grad: str | None = "grad"  # the input holding the output's gradient (None: a scalar loss)
    exact: bool = False  # integer results: compared exactly on the timed inputs
    slow: bool = False  # an implementation takes seconds: half the repeats

    @property
    def timed(self) -> str:
        return "fwd" if self.grad_of is None else f"fwd+bwd (w.r.t. {self.grad_of})"


_POOL = {"B": 4, "C": 21, "H": 512, "W": 512, "N_s": 1024}
_POOL_QUICK = {"B": 1, "C": 21, "H": 64, "W": 64, "N_s": 16}
_SPN = {"B": 4, "C": 21, "K": 21, "H": 256, "W": 256, "N_s": 256}
_SPN_QUICK = {"B": 1, "C": 21, "K": 21, "H": 64, "W": 64, "N_s": 16}
_GRID = {"B": 4, "H": 512, "W": 512, "S": 16}
_GRID_QUICK = {"B": 1, "H": 64, "W": 64, "S": 16}


def _pool_case(reduce: str, alternative: str, reused: bool = False) -> Case:
    return Case(
        op=f"SuperpixelAssignment.pool({reduce!r})" if reused else f"superpixel_pool(reduce={reduce!r})",
        alternative=alternative,
        ours=(lambda i: i["a"].pool(i["x"], reduce))
        if reused
        else (lambda i: superpixel_pool(i["x"], i["sp"], i["n"], reduce=reduce, validate=False)),
        alt=lambda i: scatter_pool(i["x"], i["sp"], i["n"], reduce),
        inputs=inputs_pool,
        full=_POOL,
        quick=_POOL_QUICK,
        grad_of="x",
    )


def _unpool_case(reused: bool) -> Case:
    return Case(
        op="SuperpixelAssignment.decode" if reused else "superpixel_unpool",
        alternative="torch.gather",
        ours=(lambda i: i["a"].decode(i["pooled"]))
        if reused
        else (lambda i: superpixel_unpool(i["pooled"], i["sp"], validate=False)),
        alt=lambda i: gather_unpool(i["pooled"], i["sp"]),
        inputs=inputs_unpool,
        full=_POOL,
        quick=_POOL_QUICK,
        grad_of="pooled",
    )


CASES: dict[str, Case] = {
    "pool_mean": _pool_case("mean", "scatter_add / counts"),
    "pool_sum": _pool_case("sum", "scatter_add"),
    "pool_max": _pool_case("max", "scatter_reduce(amax)"),
    "pool_mean_reused": _pool_case("mean", "scatter_add / counts", reused=True),
    "unpool": _unpool_case(reused=False),
    "unpool_reused": _unpool_case(reused=True),
    "spixel_loss": Case(
        op="spixel_loss(renormalize=False)",
        alternative="one-hot + 9 shifts",
        ours=lambda i: spixel_loss(
            i["assoc"], i["target"], i["S"], num_classes=i["K"], renormalize=False, validate=False
        ),
        alt=lambda i: onehot_nine_shift_loss(i["assoc"], i["target"], i["S"], i["K"]),
        inputs=inputs_loss,
        full={**_GRID, "K": 21},
        quick={**_GRID_QUICK, "K": 21},
        grad_of="assoc",
        grad=None,
        slow=True,
    ),
    "relabel_contiguous": Case(
        op="relabel_contiguous",
        alternative="torch.unique per image",
        ours=lambda i: relabel_contiguous(i["sp"]),
        alt=lambda i: unique_relabel(i["sp"]),
        inputs=inputs_relabel,
        full={"B": 4, "H": 512, "W": 512, "N_s": 1024},
        quick={"B": 1, "H": 64, "W": 64, "N_s": 16},
        exact=True,
    ),
    "enforce_connectivity": Case(
        op="enforce_connectivity(min_size=1)",
        alternative="skimage label per image",
        ours=lambda i: enforce_connectivity(i["labels"], min_size=1),
        alt=lambda i: skimage_connectivity(i["labels"]),
        inputs=inputs_connectivity,
        full={"B": 4, "H": 256, "W": 256, "S": 16},
        quick=_GRID_QUICK,
        exact=True,
    ),
    "hard_superpixels": Case(
        op="hard_superpixels",
        alternative="argmax + gather",
        ours=lambda i: hard_superpixels(i["assoc"], i["S"], validate=False),
        alt=lambda i: argmax_hard(i["assoc"], i["S"]),
        inputs=inputs_hard,
        full=_GRID,
        quick=_GRID_QUICK,
        exact=True,
    ),
    "superpixel_cam": Case(
        op="superpixel_cam",
        alternative="scatter_add + gather",
        ours=lambda i: superpixel_cam(
            i["x"], i["sp"], i["n"], weight=i["weight"], bias=i["bias"], validate=False
        ),
        alt=lambda i: scatter_cam(i["x"], i["sp"], i["n"], i["weight"], i["bias"]),
        inputs=inputs_spn,
        full=_SPN,
        quick=_SPN_QUICK,
        grad_of="x",
        grad="grad_cam",
    ),
    "superpixel_global_average": Case(
        op="superpixel_global_average",
        alternative="scatter_add",
        ours=lambda i: superpixel_global_average(i["x"], i["sp"], i["n"], validate=False),
        alt=lambda i: scatter_global_average(i["x"], i["sp"], i["n"]),
        inputs=inputs_spn,
        full=_SPN,
        quick=_SPN_QUICK,
        grad_of="x",
        grad="grad_avg",
    ),
}


def case_config(name: str, quick: bool, batch_size: int | None = None) -> dict:
    """The sizes of one op (``quick``: the small ones; ``batch_size`` overrides B)."""
    cfg = dict(CASES[name].quick if quick else CASES[name].full)
    if batch_size is not None:
        cfg["B"] = batch_size
    return cfg


def case_repeats(name: str, repeats: int, quick: bool) -> int:
    """Timed runs of op ``name``: ``repeats`` under ``--quick``, else half of it (at least 3) if slow."""
    if quick:
        return repeats
    return max(3, repeats // 2) if CASES[name].slow else repeats


def _outputs(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


def make_step(case: Case, fn: Callable[[Inputs], Any], inp: Inputs) -> Callable[[], None]:
    """One timed run: the call, and its backward where the op is differentiable."""
    if case.grad_of is None:
        return lambda: fn(inp)
    leaf = inp[case.grad_of]
    grad = None if case.grad is None else inp[case.grad]

    def step() -> None:
        leaf.grad = None
        _outputs(fn(inp))[0].backward(grad)

    return step


# ------------------------------------------------------------------------------------------- check
def check_case(name: str, cfg: dict, device: str = "cpu") -> dict:
    """Ours against the alternative on the same inputs: float ops in float64 (outputs and the gradient),
    integer ops exactly on the float32 inputs that are timed."""
    case = CASES[name]
    inp = case.inputs(cfg, torch.device(device), torch.float32 if case.exact else torch.float64)
    results = []
    for fn in (case.ours, case.alt):
        outs = _outputs(fn(inp))
        if case.grad_of is not None:
            leaf = inp[case.grad_of]
            leaf.grad = None
            outs[0].backward(None if case.grad is None else inp[case.grad])
            outs.append(leaf.grad)
        results.append([o.detach() for o in outs])
    ours, alt = results
    shapes_equal = [tuple(o.shape) for o in ours] == [tuple(a.shape) for a in alt]
    if case.exact:
        equal = shapes_equal and all(torch.equal(o, a) for o, a in zip(ours, alt, strict=True))
        return {"kind": "exact", "passed": bool(equal)}
    if not shapes_equal:
        return {"kind": "float64", "passed": False, "max_rel_diff": None}
    diffs = [
        float((o - a).abs().max() / a.abs().max().clamp_min(1e-300)) for o, a in zip(ours, alt, strict=True)
    ]
    rel = nan_max(diffs)  # a NaN fails (a NaN gradient after exact values)
    return {
        "kind": "float64",
        "max_rel_diff": rel,
        "tolerance": CHECK_TOLERANCE,
        "passed": rel <= CHECK_TOLERANCE,
    }


# ------------------------------------------------------------------------------------------- workers
def worker(
    name: str, impl: str, cfg: dict, repeats: int, device: str = "cpu", fresh_process: bool = True
) -> dict:
    """Time one implementation (``"ours"`` or ``"alternative"``) of one op, with its peak memory; ``"ours"``
    then also alternates both for the paired ratio (after the memory reading, which those runs disturb)."""
    if impl not in ("ours", "alternative"):
        raise ValueError(f"impl must be 'ours' or 'alternative', got {impl!r}")
    case = CASES[name]
    dev = torch.device(device)
    inp = case.inputs(cfg, dev, torch.float32)
    ours = make_step(case, case.ours, inp)
    alt = make_step(case, case.alt, inp)
    memory = PeakMemory(dev)
    step = ours if impl == "ours" else alt
    times = time_ms(step, repeats, warmup=warmup_runs(dev), device=dev)
    row: dict[str, Any] = {
        "impl": impl,
        "median_ms": statistics.median(times),
        "times_ms": times,
        **memory_fields(memory, fresh_process, step),
    }
    if impl == "ours":
        for _ in range(warmup_runs(dev)):
            alt()
        t_ours, t_alt = paired_times(ours, alt, repeats, device=dev)
        ratios = [o / a for o, a in zip(t_ours, t_alt, strict=True)]
        row["paired_ratio_to_alternative"] = statistics.median(ratios)
        row["paired_ratios"] = ratios
    return row


# ------------------------------------------------------------------------------------------- driver
def _run_worker(args: argparse.Namespace, name: str, impl: str, cfg: dict, repeats: int) -> dict:
    """One implementation of one op, in this process (``--in-process``) or in a fresh subprocess."""
    if args.in_process:
        try:
            return worker(name, impl, cfg, repeats, device=args.device, fresh_process=False)
        finally:
            gc.collect()
            if torch.device(args.device).type == "cuda":
                torch.cuda.empty_cache()
    cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads)]
    cmd += ["--repeats", str(repeats), "--worker", name, impl, json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"impl": impl, "failed": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _describe(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_ops.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="small shapes, 2 repeats, all in this process (smoke test)"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per implementation (slow ops: half, at least 3; default 10, quick 2)",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--batch-size", type=int, default=None, help="B of every op (default: 4; quick 1)")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads (here and in every worker; default 2)"
    )
    ap.add_argument("--ops", default=None, help=f"comma-separated subset of {','.join(CASES)} (default: all)")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="measure everything in this process (no fresh subprocess each; no CPU memory figure)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/bench_ops_<device>_<UTC date-time>.json, with "
        "_<N>thread after <device> for --threads N other than 2: never a committed file; --quick writes none "
        "unless given)",
    )
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``ap.error`` on failure): known op names, positive counts."""
    check_lists(ap, args, ["ops"])
    unknown = sorted(set(args.ops.split(",")) - set(CASES)) if args.ops else []
    if unknown:
        ap.error(f"--ops: unknown {unknown}; choose from {','.join(CASES)}")
    check_counts(ap, args, dict.fromkeys(("repeats", "threads", "batch_size"), 1))
    check_output(ap, "--out", args.out, default_in=None if args.quick or args.worker else RESULTS)


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    torch.set_num_threads(args.threads)
    device = cli_device(ap, args.device)

    if args.worker:
        name, impl, cfg = args.worker
        print(json.dumps(worker(name, impl, json.loads(cfg), args.repeats, device=args.device)))
        return {}
    args.in_process = args.in_process or args.quick  # tiny shapes: no interpreter start per measurement
    if args.repeats is None:  # given: also with --quick (it was ignored there, and recorded as if used)
        args.repeats = 2 if args.quick else 10

    names = args.ops.split(",") if args.ops else list(CASES)
    meta = environment(device, args.threads)  # load average before this run: is the machine shared now?
    meta.update(repeats=args.repeats, in_process=args.in_process, quick=args.quick)
    mode = "all in this process" if args.in_process else "one subprocess per implementation"
    mem_name = "CUDA MiB" if device.type == "cuda" else "peak MiB"
    print(
        f"torch {torch.__version__}, device {args.device}, {meta['cpus']} CPUs, {meta['cpu_model']}, "
        f"{args.threads} threads, {mode}; medians (ms), ratios ours / alternative, peak "
        f"{'CUDA memory above the inputs' if device.type == 'cuda' else 'tensor bytes live at once'} (MiB)\n",
        flush=True,
    )
    ops: dict[str, dict] = {}
    for name in names:
        case = CASES[name]
        cfg = case_config(name, args.quick, args.batch_size)
        repeats = case_repeats(name, args.repeats, args.quick)
        check = check_case(name, cfg, args.device)
        gc.collect()
        entry: dict[str, Any] = {
            "op": case.op,
            "alternative": case.alternative,
            "timed": case.timed,
            "config": cfg,
            "repeats": repeats,
            "check": check,
        }
        ops[name] = entry
        detail = (
            "exact" if check["kind"] == "exact" else f"float64 rel. diff {cell(check['max_rel_diff'], '.1e')}"
        )
        print(
            f"== {name}: {case.op}, {case.timed}, {_describe(cfg)}; check {detail}: "
            f"{'passed' if check['passed'] else 'FAILED'}",
            flush=True,
        )
        if not check["passed"]:
            print("   not timed: the two implementations disagree\n", flush=True)
            continue
        rows = {impl: _run_worker(args, name, impl, cfg, repeats) for impl in ("ours", "alternative")}
        entry["rows"] = list(rows.values())
        if any("failed" in r for r in rows.values()):
            print(f"   failed: {[r.get('failed') for r in rows.values()]}\n", flush=True)
            continue
        ours, alt = rows["ours"], rows["alternative"]
        entry["ratio_to_alternative"] = ours["median_ms"] / alt["median_ms"]
        entry["paired_ratio_to_alternative"] = ours["paired_ratio_to_alternative"]
        print(f"   {'implementation':<34}{'median ms':>11}{mem_name:>10}")
        for label, r in ((case.op, ours), (case.alternative, alt)):
            print(f"   {label:<34}{r['median_ms']:>11.2f}{cell(peak_mib(r), '>10.1f')}")
        print(
            f"   ours / alternative: {entry['ratio_to_alternative']:.2f}x (medians), "
            f"{entry['paired_ratio_to_alternative']:.2f}x (paired, median of {repeats} rounds)\n",
            flush=True,
        )

    print(f"{'op':<28}{'ours ms':>10}{'alt ms':>10}{'ratio':>8}{'paired':>8}{'ours MiB':>10}{'alt MiB':>10}")
    for name, entry in ops.items():
        if "ratio_to_alternative" not in entry:
            print(f"{name:<28}  not timed")
            continue
        ours, alt = entry["rows"]
        print(
            f"{name:<28}{ours['median_ms']:>10.2f}{alt['median_ms']:>10.2f}"
            f"{entry['ratio_to_alternative']:>7.2f}x{entry['paired_ratio_to_alternative']:>7.2f}x"
            f"{cell(peak_mib(ours), '>10.1f')}{cell(peak_mib(alt), '>10.1f')}"
        )
    ok = all(e["check"]["passed"] and "ratio_to_alternative" in e for e in ops.values())
    data = {"meta": meta, "ops": ops, "all_passed": ok}
    threads = "" if args.threads == 2 else f"_{args.threads}thread"
    out = result_path(args.out, stamped_result(f"bench_ops_{args.device}{threads}"), args.quick)
    if out is not None:
        write_json(out, data)
        print(f"\nwrote {out}")
    if not ok:
        raise SystemExit("a check failed or a measurement did not finish: see the table above")
    return data


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback,
    # the measuring child killed
    raise SystemExit(run_script(main, "bench_ops.py"))
