"""Fixtures of the example tests (helpers that are plain functions live in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 train / 2 val synthetic VOC images of 36x44 pixels (SBD lists included)."""
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = tmp_path_factory.mktemp("tiny_voc")
    return generate_synthetic_voc(root, num_train=4, num_val=2, image_size=(36, 44), seed=1)
