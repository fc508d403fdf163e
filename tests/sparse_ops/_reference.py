"""Slow, obvious references (numpy loops over superpixels) and hypothesis strategies for the hard ops."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st


def ref_pool(x: np.ndarray, sp: np.ndarray, n_s: int, reduce: str, mask: np.ndarray | None = None):
    """x [B, C, H, W], sp [B, H, W] -> ([B, N_s, C], counts [B, N_s]), a loop over images and superpixels."""
    b, c = x.shape[:2]
    out = np.zeros((b, n_s, c), dtype=np.float64)
    counts = np.zeros((b, n_s), dtype=np.float64)
    for i in range(b):
        for s in range(n_s):
            sel = sp[i] == s
            if mask is not None:
                sel = sel & mask[i]
            vals = x[i][:, sel].astype(np.float64)  # [C, n]
            counts[i, s] = sel.sum()
            if sel.sum() == 0:
                continue
            if reduce == "sum":
                out[i, s] = vals.sum(1)
            elif reduce == "mean":
                out[i, s] = vals.mean(1)
            else:
                out[i, s] = vals.max(1)
    return out, counts


def ref_uniformize(x: np.ndarray, sp: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Every pixel gets the mean of the counted pixels of its superpixel (or keeps its value without any)."""
    y = x.astype(np.float64).copy()
    for i in range(x.shape[0]):
        for s in np.unique(sp[i]):
            members = sp[i] == s
            counted = members if mask is None else members & mask[i]
            if counted.sum() == 0:
                continue
            mean = x[i][:, counted].astype(np.float64).mean(1)
            y[i][:, members] = mean[:, None]
    return y


@st.composite
def label_maps(draw, max_batch: int = 3, max_side: int = 7, max_ids: int = 12):
    """(superpixels LongTensor[B, H, W], N_s), random layouts: gaps, empty ids, K=1, one-pixel superpixels."""
    b = draw(st.integers(0, max_batch))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    n_s = draw(st.integers(1, max_ids))
    layout = draw(st.sampled_from(["random", "blocks", "single", "sparse_ids"]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = np.random.default_rng(seed)
    if layout == "random":
        sp = g.integers(0, n_s, size=(b, h, w))
    elif layout == "single":
        sp = np.full((b, h, w), g.integers(0, n_s))
    elif layout == "sparse_ids":  # only a few ids used, with gaps
        used = g.choice(n_s, size=min(n_s, 2), replace=False)
        sp = used[g.integers(0, len(used), size=(b, h, w))]
    else:
        bh, bw = g.integers(1, 4, size=2)
        cells = (np.arange(h)[:, None] // bh) * 7 + (np.arange(w)[None, :] // bw)
        sp = np.broadcast_to(cells % n_s, (b, h, w)).copy()
    return torch.from_numpy(sp.astype(np.int64)), n_s


def ref_unpool(pooled: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """pooled [B, N_s, C], sp [B, H, W] -> [B, C, H, W] by indexing."""
    out = np.zeros((sp.shape[0], pooled.shape[2], *sp.shape[1:]), dtype=np.float64)
    for i in range(sp.shape[0]):
        out[i] = np.moveaxis(pooled[i][sp[i]], -1, 0)
    return out
