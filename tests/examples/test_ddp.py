"""A 2-process DistributedDataParallel run through torchrun (gloo on CPU): no home-made process management."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.voc_joint.checkpoint import load_checkpoint

from ._exmodels_utils import tiny_voc, train_args  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_process_gloo(tiny_voc, tmp_path) -> None:  # noqa: F811
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "examples/voc_joint/train.py",
        *train_args(
            tiny_voc, tmp_path, "--stage", "joint", "--epochs", "1", "--batch-size", "2", "--threads", "1"
        ),
    ]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "x2" in res.stdout  # the main process reports a world size of 2
    ck = load_checkpoint(tmp_path / "joint" / "checkpoint.pt")
    # 4 training images, 2 processes x batch 2 = one step per epoch (EpochSampler shards the data)
    assert (ck["epoch"], ck["step"], ck["complete"]) == (1, 1, True)
    assert not any(k.startswith("module.") for k in ck["model"])
