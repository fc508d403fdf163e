"""Superpixel refinement for your own segmentation model: the code of ``docs/tutorials/own_model.rst``.

Runs on the CPU in a few seconds and downloads nothing::

    python docs/tutorials/own_model.py            # SLIC superpixels (scikit-image), else the regular grid
    python docs/tutorials/own_model.py --grid     # the library's regular grid
"""

from __future__ import annotations

import argparse

# --- [imports] -------------------------------------------------------------------------------------------
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sparse_ops as so
from transparent_init import TransparentConv1x1, selection_weight

# --- [/imports] ------------------------------------------------------------------------------------------


# --- [refiner] --------------------------------------------------------------------------------------------
class SuperpixelRefiner(nn.Module):
    """Refine logits ``S`` with superpixels: ``uniformize(fusion([S, U(S)]))``, exactly ``U(S)`` at step 0."""

    def __init__(self, num_classes: int, hidden: tuple[int, ...] = (64, 64), seed: int = 0) -> None:
        super().__init__()
        c = num_classes
        # the fusion starts as "take the uniformized half" of [S, U]: a (C, 2C) selection matrix
        self.fusion = TransparentConv1x1(
            2 * c, list(hidden), c, target_weight=selection_weight(2 * c, range(c, 2 * c)), generator=seed
        )

    def forward(self, logits: Tensor, superpixels: Tensor, num_superpixels: int) -> Tensor:
        enc = so.SuperpixelAssignment(superpixels, num_superpixels)  # built once, used twice
        u = enc.uniformize(logits)  # every pixel gets its superpixel's mean logits
        fused = self.fusion(torch.cat([logits, u], dim=1))
        return enc.uniformize(fused)  # one label per superpixel


# --- [/refiner] -------------------------------------------------------------------------------------------


# --- [superpixels] ----------------------------------------------------------------------------------------
def slic_superpixels(images: Tensor, n_segments: int = 100) -> tuple[Tensor, int]:
    """SLIC ids ``(B, H, W)`` of images in ``[0, 1]`` and the number of superpixel slots ``N_s``."""
    import numpy as np
    from skimage.segmentation import slic

    labels = [
        slic(img.permute(1, 2, 0).double().numpy(), n_segments=n_segments, compactness=10, start_label=0)
        for img in images
    ]
    ids = torch.from_numpy(np.stack(labels)).long()
    return ids, int(ids.max()) + 1  # ids need not be contiguous: missing ids are empty superpixels


def grid_superpixels(images: Tensor, cell_size: int = 16) -> tuple[Tensor, int]:
    """The regular grid of ``cell_size`` cells as superpixels (no extra dependency)."""
    b, _, h, w = images.shape
    ids = so.grid_cell_ids(h, w, cell_size, batch_size=b, device=images.device)
    return ids, so.num_grid_cells(h, w, cell_size)


# --- [/superpixels] ---------------------------------------------------------------------------------------


def make_images(batch_size: int, size: int) -> Tensor:
    """Images in ``[0, 1]``: scikit-image's bundled astronaut photo when available, else random blobs."""
    try:
        from skimage.data import astronaut

        img = torch.from_numpy(astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    except ImportError:
        img = torch.rand(1, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(
        0, 1
    )
    return torch.cat([img, img.flip(-1)] * batch_size)[:batch_size]  # the photo and its mirror image


def image_size(text: str) -> int:
    """``type=`` of ``--size``: an image side in [32, 2048] pixels (0 or 2**70: a traceback in the model)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [32, 2048], got {text!r}") from None
    if not 32 <= value <= 2048:
        raise argparse.ArgumentTypeError(f"must be an integer in [32, 2048], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The tutorial's command line (``python docs/tutorials/own_model.py --help``)."""
    p = argparse.ArgumentParser(
        allow_abbrev=False, description="Superpixel refinement for your own segmentation model"
    )
    p.add_argument("--grid", action="store_true", help="regular-grid superpixels instead of SLIC")
    p.add_argument("--size", type=image_size, default=128, help="image side in pixels (default: 128)")
    return p


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = build_parser()
    args = p.parse_args(argv)
    torch.manual_seed(0)

    # --- [model] ------------------------------------------------------------------------------------------
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    num_classes = 21
    # your pretrained model goes here; weights=None keeps this tutorial offline
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    # --- [/model] -----------------------------------------------------------------------------------------

    images = make_images(2, args.size)
    # --- [input] ------------------------------------------------------------------------------------------
    # images: your batch, (B, 3, H, W) RGB in [0, 1] (here the astronaut photo of scikit-image and its mirror)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)  # normalized as your model was trained
    # --- [/input] -----------------------------------------------------------------------------------------

    if args.grid:  # --grid: the library's regular grid, even with scikit-image installed
        superpixels, n_s = grid_superpixels(images)
        kind = "grid"
    else:
        # --- [ids] ----------------------------------------------------------------------------------------
        try:
            superpixels, n_s = slic_superpixels(images)
            kind = "SLIC"
        except ImportError:  # scikit-image is optional: fall back to the regular grid
            superpixels, n_s = grid_superpixels(images)
            kind = "grid"
        # --- [/ids] ---------------------------------------------------------------------------------------

    # --- [step0] ------------------------------------------------------------------------------------------
    refiner = SuperpixelRefiner(num_classes)
    model.eval()  # step-0 check: the refined output IS the uniformized output of your model
    with torch.no_grad():
        logits = model(x)["out"]
        refined = refiner(logits, superpixels, n_s)
        reference = so.uniformize(logits, superpixels, n_s)
        # U(S) = U(U(S)): the outer uniformize hides which half the fusion takes; check the fusion alone
        fused = refiner.fusion(torch.cat([logits, reference], dim=1))
    step0_error = (refined - reference).abs().max().item()
    print(f"{kind} superpixels: {n_s} slots; step-0 max |refined - U(S)| = {step0_error:.2e}")
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    assert step0_error < tolerance
    assert (fused - reference).abs().max().item() < tolerance, "the fusion does not start as [S, U] -> U"
    # --- [/step0] -----------------------------------------------------------------------------------------

    # --- [train] ------------------------------------------------------------------------------------------
    model.train()
    optimizer = torch.optim.SGD(
        [
            {"params": model.parameters(), "lr": 1e-3},
            {"params": refiner.parameters(), "lr": 1e-4},  # the paper gives the fusion its own learning rate
        ],
        momentum=0.9,
    )
    target = torch.randint(0, num_classes, superpixels.shape, generator=torch.Generator().manual_seed(1))
    refined = refiner(model(x)["out"], superpixels, n_s)
    loss = F.cross_entropy(refined, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    print(f"one training step: loss {loss.item():.4f}")
    # --- [/train] -----------------------------------------------------------------------------------------

    # every pixel of a superpixel carries the same logits, so the labels follow the superpixel boundaries
    labels = refined.argmax(1)
    one_label = all(labels[0][superpixels[0] == s].unique().numel() <= 1 for s in superpixels[0].unique())
    print(f"one label per superpixel: {one_label}")
    return {
        "step0_error": step0_error,
        "loss": loss.item(),
        "num_superpixels": float(n_s),
        "slic": kind == "SLIC",
    }


if __name__ == "__main__":
    main()
