"""The interleaved accumulator slots (``k`` per superpixel) give the same results for every ``k``.

Small test images never reach the sizes where :func:`sparse_ops._kernels.choose_interleave` picks ``k > 1``, so
these tests force each ``k`` and compare with the loop reference, forward, backward and with a mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparse_ops import _kernels, assignment, superpixel_pool, uniformize
from tests.sparse_ops._reference import ref_pool, ref_uniformize


@pytest.fixture(params=[1, 2, 4], ids=lambda k: f"k{k}")
def forced_k(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(assignment, "choose_interleave", lambda num_pixels, num_superpixels: request.param)
    return request.param


def _case(masked: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    sp = torch.randint(0, 6, (2, 5, 7), generator=g)
    sp[1, sp[1] == 4] = 5  # id 4 empty in image 1
    mask = torch.rand(2, 5, 7, generator=g) > 0.3 if masked else None
    return x, sp, mask


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_uniformize_equals_reference_for_every_k(forced_k: int, masked: bool) -> None:
    x, sp, mask = _case(masked)
    y = uniformize(x, sp, 6, mask)
    ref = ref_uniformize(x.numpy(), sp.numpy(), None if mask is None else mask.numpy())
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_pool_equals_reference_for_every_k(forced_k: int, reduce: str) -> None:
    x, sp, _ = _case(False, seed=1)
    pooled, counts = superpixel_pool(x, sp, 6, reduce, return_counts=True)
    ref, ref_counts = ref_pool(x.numpy(), sp.numpy(), 6, reduce)
    np.testing.assert_allclose(pooled.numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(counts.numpy(), ref_counts)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_gradcheck_for_every_k(forced_k: int, masked: bool) -> None:
    x, sp, mask = _case(masked, seed=2)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: uniformize(t, sp, 6, mask), (x,))
    assert torch.autograd.gradgradcheck(lambda t: uniformize(t, sp, 6, mask), (x,))


def test_choose_interleave_rule() -> None:
    assert _kernels.choose_interleave(512 * 512, 16384) == 1  # 16-pixel superpixels
    assert _kernels.choose_interleave(512 * 512, 1024) == 4  # 256 px, 4096 slots
    assert _kernels.choose_interleave(512 * 512, 4096) == 2  # 64 px, 4 slots would make 16384
