"""Deterministic global RNG for every test of this folder (inputs drawn without an explicit generator)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    torch.manual_seed(0)
