from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from sparse_ops import SpixelLoss, SpixelLossOutput, spixel_loss

from ._soft_reference import ref_pool, ref_unpool


def ref_loss(assoc, target, S, m=0.003, ignore=255, num_classes=None, eps=1e-8):
    """Loop reference: one-hot / features + xy, pooled with ignored pixels zeroed, means over valid pixels."""
    B, _, H, W = assoc.shape
    a = assoc.double()
    if target.is_floating_point():
        feats = target.double()
        valid = torch.ones(B, H, W, dtype=torch.bool)
    else:
        valid = target != ignore
        K = num_classes or int(target[valid].max()) + 1
        feats = torch.zeros(B, K, H, W, dtype=torch.float64)
        for b in range(B):
            for y in range(H):
                for x in range(W):
                    if valid[b, y, x]:
                        feats[b, target[b, y, x], y, x] = 1
    C = feats.shape[1]
    xy = torch.zeros(B, 2, H, W, dtype=torch.float64)
    for y in range(H):
        for x in range(W):
            xy[:, 0, y, x] = x
            xy[:, 1, y, x] = y
    both = torch.cat([feats, xy], 1)
    rec = ref_unpool(ref_pool(both, a * valid[:, None], S), a, S)
    sem = pos = 0.0
    n = 0
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if not valid[b, y, x]:
                    continue
                n += 1
                if target.is_floating_point():
                    sem += math.sqrt(sum((rec[b, c, y, x] - feats[b, c, y, x]) ** 2 for c in range(C)))
                else:
                    sem += -sum(feats[b, c, y, x] * math.log(rec[b, c, y, x] + eps) for c in range(C))
                pos += math.sqrt((rec[b, C, y, x] - x) ** 2 + (rec[b, C + 1, y, x] - y) ** 2)
    n = max(n, 1)
    sem, pos = float(sem) / n, float(pos) / n
    return sem + m / S * pos, sem, pos


@given(
    H=st.integers(2, 9),
    W=st.integers(2, 9),
    S=st.integers(2, 4),
    seed=st.integers(0, 1000),
    dense=st.booleans(),
)
@settings(max_examples=15)
def test_loss_matches_reference(H, W, S, seed, dense):
    g = torch.Generator().manual_seed(seed)
    assoc = torch.softmax(torch.randn(2, 9, H, W, generator=g, dtype=torch.float64), 1)
    if dense:
        target = torch.rand(2, 3, H, W, generator=g, dtype=torch.float64)
    else:
        target = torch.randint(0, 4, (2, H, W), generator=g)
        target[torch.rand(2, H, W, generator=g) < 0.2] = 255
        target[0, 0, 0] = 1  # at least one valid pixel
    out = spixel_loss(assoc, target, S)
    assert isinstance(out, SpixelLossOutput)
    total, sem, pos = ref_loss(assoc, target, S)
    torch.testing.assert_close(out.total, torch.tensor(total, dtype=torch.float64))
    torch.testing.assert_close(out.semantic, torch.tensor(sem, dtype=torch.float64))
    torch.testing.assert_close(out.position, torch.tensor(pos, dtype=torch.float64))


def test_target_with_channel_dim_and_num_classes():
    assoc = torch.softmax(torch.randn(1, 9, 6, 5), 1)
    t = torch.randint(0, 3, (1, 6, 5))
    a = spixel_loss(assoc, t, 3)
    b = spixel_loss(assoc, t[:, None], 3, num_classes=7)  # extra empty classes change nothing
    torch.testing.assert_close(a.total, b.total)


def test_ignored_pixels_do_not_matter():
    g = torch.Generator().manual_seed(3)
    assoc = torch.softmax(torch.randn(1, 9, 8, 8, generator=g), 1)
    t = torch.randint(0, 3, (1, 8, 8), generator=g)
    t[:, :2] = 255
    t2 = t.clone()
    base = spixel_loss(assoc, t, 4)
    assoc2 = assoc.clone()
    assoc2[:, :, :2] = torch.softmax(torch.randn(1, 9, 2, 8, generator=g), 1)
    # pixels in ignored rows change their association: they are neither pooled nor scored, but they are
    # unpooled only for themselves, so nothing changes
    torch.testing.assert_close(spixel_loss(assoc2, t2, 4).total, base.total)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[:, :2] = False
    t3 = t.clone()
    t3[:, :2] = 0
    torch.testing.assert_close(spixel_loss(assoc, t3, 4, mask=mask).total, base.total)


def test_all_ignored_gives_zero():
    assoc = torch.softmax(torch.randn(1, 9, 4, 4), 1).requires_grad_()
    out = spixel_loss(assoc, torch.full((1, 4, 4), 255), 2, num_classes=21)
    assert out.total == 0
    out.total.backward()
    assert torch.equal(assoc.grad, torch.zeros_like(assoc))


def test_perfect_grid_labels():
    assoc = torch.zeros(1, 9, 4, 6)
    assoc[:, 4] = 1
    t = torch.tensor([[0, 0, 1, 1, 2, 2]] * 4)[None]
    out = spixel_loss(assoc, t, 2, pos_weight=0.5)
    assert abs(out.semantic.item()) < 1e-6
    torch.testing.assert_close(out.position, torch.tensor(math.sqrt(0.5)))
    torch.testing.assert_close(out.total, out.semantic + 0.25 * out.position)


@pytest.mark.parametrize("dense", [False, True])
def test_gradcheck_assoc(dense):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 9, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    if dense:
        t = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64)
    else:
        t = torch.randint(0, 3, (1, 4, 5), generator=g)
        t[0, 0, :2] = 255
    assert gradcheck(
        lambda z: spixel_loss(torch.softmax(z, 1), t, 3, pos_weight=0.3, num_classes=3).total, (logits,)
    )


def test_module(device):
    crit = SpixelLoss(4, num_classes=3).to(device)
    assert "cell_size=4" in repr(crit)
    assoc = torch.softmax(torch.randn(2, 9, 8, 8, device=device), dim=1)
    t = torch.randint(0, 3, (2, 8, 8), device=device)
    out = crit(assoc, t)
    torch.testing.assert_close(out.total, spixel_loss(assoc, t, 4, num_classes=3).total)
    assert out.total.device.type == device.type


def test_errors():
    a = torch.softmax(torch.randn(1, 9, 4, 4), 1)
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="target must be a Tensor"):
        spixel_loss(a, [0], 2)
    with pytest.raises(ValueError, match="target must have batch size 1 and spatial size"):
        spixel_loss(a, torch.zeros(2, 4, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="an integer target must have shape"):
        spixel_loss(a, torch.zeros(1, 2, 4, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="a floating target must have shape"):
        spixel_loss(a, torch.zeros(1, 4, 4), 2)
    with pytest.raises(TypeError, match="target must be an integer label map or floating features"):
        spixel_loss(a, torch.zeros(1, 4, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="target labels must be >= 0"):
        spixel_loss(a, t - 1, 2)
    with pytest.raises(ValueError, match="target labels must be < num_classes=2, got label 3"):
        spixel_loss(a, t + 3, 2, num_classes=2)
    with pytest.raises(ValueError, match="pos_weight must be a non-negative number"):
        spixel_loss(a, t, 2, pos_weight=-1.0)
    with pytest.raises(TypeError, match="mask must be a bool Tensor"):
        spixel_loss(a, t, 2, mask=torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 4, 4\)"):
        spixel_loss(a, t, 2, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="assoc must have 9 channels"):
        spixel_loss(a[:, :3], t, 2)
