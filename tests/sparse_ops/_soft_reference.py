"""Slow, obvious references for the soft association ops (explicit loops over pixels and candidates)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def candidates(y: int, x: int, H: int, W: int, S: int):
    """Yield (k, cell_row, cell_col, valid) for the 9 candidates of pixel (y, x)."""
    n_h, n_w = math.ceil(H / S), math.ceil(W / S)
    for k, (dy, dx) in enumerate(OFFSETS):
        i, j = y // S + dy, x // S + dx
        yield k, i, j, (0 <= i < n_h and 0 <= j < n_w)


def weights(assoc: Tensor, b: int, y: int, x: int, S: int, renormalize: bool) -> dict:
    H, W = assoc.shape[-2:]
    w = {}
    for k, i, j, ok in candidates(y, x, H, W, S):
        if ok:
            w[(i, j)] = w.get((i, j), 0) + assoc[b, k, y, x]
    if renormalize:
        total = sum(w.values()) if w else 0
        w = {key: v / total for key, v in w.items()} if total > 0 else {key: v * 0 for key, v in w.items()}
    return w


def ref_pool(features: Tensor, assoc: Tensor, S: int, renormalize: bool = True) -> Tensor:
    B, C, H, W = features.shape
    n_h, n_w = math.ceil(H / S), math.ceil(W / S)
    num = torch.zeros(B, C, n_h, n_w, dtype=torch.float64)
    mass = torch.zeros(B, n_h, n_w, dtype=torch.float64)
    f = features.double().cpu()
    a = assoc.double().cpu()
    for b in range(B):
        for y in range(H):
            for x in range(W):
                for (i, j), w in weights(a, b, y, x, S, renormalize).items():
                    num[b, :, i, j] += w * f[b, :, y, x]
                    mass[b, i, j] += w
    out = torch.zeros_like(num)
    nz = mass > 0
    out = torch.where(nz[:, None], num / torch.where(nz, mass, 1.0)[:, None], out)
    return out


def ref_unpool(centres: Tensor, assoc: Tensor, S: int, renormalize: bool = True) -> Tensor:
    B, C = centres.shape[:2]
    H, W = assoc.shape[-2:]
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    c = centres.double().cpu()
    a = assoc.double().cpu()
    for b in range(B):
        for y in range(H):
            for x in range(W):
                for (i, j), w in weights(a, b, y, x, S, renormalize).items():
                    out[b, :, y, x] += w * c[b, :, i, j]
    return out
