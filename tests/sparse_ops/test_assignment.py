"""SuperpixelAssignment: counts, encode/decode, to_sparse, and every validation error."""

from __future__ import annotations

import pytest
import torch

from sparse_ops import SuperpixelAssignment, superpixel_pool, superpixel_unpool, uniformize


def test_counts_encode_decode():
    sp = torch.tensor([[[0, 0, 2], [2, 2, 2]]])
    mask = torch.tensor([[[True, False, True], [True, True, True]]])
    a = SuperpixelAssignment(sp, 4, mask)
    assert a.num_superpixels == 4 and a.counts.dtype == torch.float32
    torch.testing.assert_close(a.counts, torch.tensor([[1.0, 0.0, 4.0, 0.0]]))
    x = torch.arange(6.0).view(1, 1, 2, 3)
    torch.testing.assert_close(a.encode(x)[0, :, 0], torch.tensor([0.0, 0.0, 3.5, 0.0]))
    p = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])
    torch.testing.assert_close(a.decode(p), superpixel_unpool(p, sp))
    assert "num_superpixels=4" in repr(a)


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("masked", [False, True])
def test_to_sparse_matches_dense_definition(layout, masked, device):
    g = torch.Generator().manual_seed(0)
    sp = torch.randint(0, 5, (2, 3, 4), generator=g).to(device)
    mask = (torch.rand(2, 3, 4, generator=g) > 0.3).to(device) if masked else None
    a = SuperpixelAssignment(sp, 6, mask)
    m = a.to_sparse(layout, dtype=torch.float64)
    assert m.layout == layout and m.shape == (12, 24)
    dense = torch.zeros(12, 24, dtype=torch.float64)
    for b in range(2):
        for p in range(12):
            if mask is None or mask[b].reshape(-1)[p]:
                dense[b * 6 + sp[b].reshape(-1)[p], b * 12 + p] = 1
    torch.testing.assert_close(m.to_dense().cpu(), dense)
    x = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64).to(device)
    rows = x.permute(0, 2, 3, 1).reshape(24, 3)
    e = a.to_sparse(layout, dtype=torch.float64, normalized=True)
    torch.testing.assert_close((e @ rows).view(2, 6, 3), a.encode(x))


def test_backends_agree_on_reused_assignment(device):
    g = torch.Generator().manual_seed(1)
    sp = torch.randint(0, 30, (3, 16, 16), generator=g).to(device)
    x = torch.randn(3, 5, 16, 16, generator=g).to(device)
    s = SuperpixelAssignment(sp, 30, backend="scatter")
    q = SuperpixelAssignment(sp, 30, backend="sparse")
    assert SuperpixelAssignment(sp, 30).backend == "scatter"
    torch.testing.assert_close(s.uniformize(x), q.uniformize(x))
    torch.testing.assert_close(s.encode(x), q.encode(x))
    p = s.encode(x)
    torch.testing.assert_close(s.decode(p), q.decode(p))


# ---------------------------------------------------------------------------------------------- errors
X = torch.randn(2, 3, 4, 5)
SP = torch.randint(0, 6, (2, 4, 5))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"logits": X.long()}, TypeError, "logits must be a floating tensor.*torch.int64"),
        ({"logits": [1.0]}, TypeError, "logits must be a torch.Tensor"),
        ({"logits": X[0]}, ValueError, r"logits must have shape \[B, C, H, W\].*got shape \(3, 4, 5\)"),
        ({"superpixels": SP.float()}, TypeError, "superpixels must have an integer dtype.*torch.float32"),
        ({"superpixels": SP.bool()}, TypeError, "superpixels must have an integer dtype.*torch.bool"),
        (
            {"superpixels": SP[:, None].repeat(1, 2, 1, 1)},
            ValueError,
            r"superpixels must have shape \[B, H, W\]",
        ),
        ({"superpixels": SP[0]}, ValueError, r"superpixels must have shape \[B, H, W\]"),
        ({"superpixels": SP[:, :3]}, ValueError, r"\[2, 4, 5\] to match logits.*got \[2, 3, 5\].*nearest"),
        ({"superpixels": SP[:1]}, ValueError, r"superpixels must have shape \[B, H, W\] = \[2, 4, 5\]"),
        ({"superpixels": SP - 1}, ValueError, "ids must be >= 0, got the id -1"),
        ({"num_superpixels": 3}, ValueError, r"< num_superpixels = 3, got the id 5"),
        ({"num_superpixels": -1}, ValueError, "num_superpixels must be >= 0, got -1"),
        ({"num_superpixels": 2.5}, TypeError, "num_superpixels must be an int.*float"),
        ({"num_superpixels": True}, TypeError, "num_superpixels must be an int.*bool"),
        (
            {"num_superpixels": torch.tensor([6.0, 6.0])},
            TypeError,
            "num_superpixels must have an integer dtype",
        ),
        ({"num_superpixels": torch.tensor([6, 6, 6])}, ValueError, r"shape \[B\] = \[2\], got shape \(3,\)"),
        (
            {"num_superpixels": torch.tensor([6, 2])},
            ValueError,
            r"image 1 must be < num_superpixels\[1\] = 2",
        ),
        ({"mask": SP > 2}, None, None),
        ({"mask": (SP > 2).float()}, TypeError, "mask must have dtype torch.bool.*torch.float32"),
        ({"mask": (SP > 2)[:, :2]}, ValueError, r"mask must have shape \[B, H, W\] = \[2, 4, 5\]"),
        ({"mask": 1}, TypeError, "mask must be a bool torch.Tensor"),
        ({"backend": "dense"}, ValueError, r"backend must be one of .*'dense'"),
    ],
)
def test_uniformize_errors(kwargs, exc, match):
    args = {"logits": X, "superpixels": SP, "num_superpixels": None, "mask": None}
    args.update(kwargs)
    backend = args.pop("backend", "auto")
    if exc is None:
        uniformize(**args, backend=backend)
        return
    with pytest.raises(exc, match=match):
        uniformize(**args, backend=backend)


def test_device_mismatch_error():
    meta_sp = SP.to("meta")
    with pytest.raises(ValueError, match="superpixels must be on the same device as logits"):
        uniformize(X, meta_sp, 6)


def test_pool_and_unpool_errors():
    with pytest.raises(ValueError, match="reduce must be one of"):
        superpixel_pool(X, SP, 6, "median")
    with pytest.raises(TypeError, match="features must be a floating tensor"):
        superpixel_pool(X.int(), SP, 6)
    with pytest.raises(ValueError, match=r"pooled must have shape \[B, N_s, C\]"):
        superpixel_unpool(torch.zeros(2, 6), SP)
    with pytest.raises(TypeError, match="pooled must be a torch.Tensor"):
        superpixel_unpool(None, SP)
    with pytest.raises(ValueError, match="batch size of pooled"):
        superpixel_unpool(torch.zeros(3, 6, 2), SP)
    with pytest.raises(ValueError, match="< num_superpixels = 4, got the id 5"):
        superpixel_unpool(torch.zeros(2, 4, 2), SP)
    a = SuperpixelAssignment(SP, 6)
    with pytest.raises(ValueError, match=r"pooled must have shape \[B, N_s, C\] = \[2, 6, C\]"):
        a.decode(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="layout must be"):
        a.to_sparse(torch.strided)


def test_module_constructor_errors():
    from sparse_ops import SuperpixelPool, SuperpixelUniformize

    with pytest.raises(ValueError, match="backend must be one of"):
        SuperpixelUniformize(backend="x")
    with pytest.raises(ValueError, match="reduce must be one of"):
        SuperpixelPool(reduce="min")
    with pytest.raises(ValueError, match="num_superpixels must be >= 0"):
        SuperpixelPool(-3)
