"""Smoke tests of the benchmark scripts: each runs end to end at a tiny size and writes a sane JSON.

They keep the scripts from rotting when the library changes; they assert correctness fields (agreement with a
reference, table structure), never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_uniformize_quick(tmp_path):
    out = tmp_path / "u.json"
    stdout = _run(
        "bench_uniformize.py",
        "--quick",
        "--repeats",
        "2",
        "--variants",
        "floor,scatter,sparse,paper_coo",
        "--out",
        str(out),
    )
    data = json.loads(out.read_text())
    assert data["meta"]["device"] == "cpu"
    assert len(data["configs"]) == 3
    for cfg in data["configs"]:
        res = cfg["results"]
        assert set(res) == {"floor", "scatter", "sparse", "paper_coo"}
        for variant in ("scatter", "sparse", "paper_coo"):
            assert res[variant]["max_abs_err"] < 1e-5, (cfg["name"], variant, res[variant])
            assert res[variant]["fwd_bwd_ms"] > 0
        assert res["scatter"]["paired_x_floor"] > 0
    sweep = data["sweep"]
    assert [r["name"] for r in sweep["rows"]] == [c["name"] for c in data["configs"]]
    assert sweep["grid_max_over_min"] >= 1.0
    assert "flatness in N_s" in stdout


def test_bench_uniformize_run_one_dense_budget_skip():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_uniformize
    finally:
        sys.path.remove(str(BENCH))
    cfg = {"B": 1, "C": 3, "H": 64, "W": 64, "N_s": 64, "labels": "grid", "threads": 1}
    skipped = bench_uniformize.run_one(cfg, "dense_bmm", "cpu", 1, dense_max_gb=1e-6)
    assert "budget" in skipped["skipped"]
    ran = bench_uniformize.run_one(cfg, "dense_bmm", "cpu", 1, dense_max_gb=1.0)
    assert ran["max_abs_err"] < 1e-5


def test_bench_soft_quick(tmp_path):
    out = tmp_path / "soft.json"
    _run("bench_soft.py", "--quick", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert data["soft"]["max_abs_diff_f64"] < 1e-10
    assert data["soft"]["rows"] and data["segnet_unpool"]["rows"]
    assert data["segnet_unpool"]["paired_ratio_to_nn"] > 0


def test_bench_transparent_init_quick(tmp_path):
    out = tmp_path / "ti.json"
    _run("bench_transparent_init.py", "--quick", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["seeds"] == 3
    # transparent stacks reproduce their input: worst error at r = 1 far below the paper's 1e-4 recovery bar
    assert data["table3"]["ours_relu"]["1"]["worst"] < 1e-5
    assert data["table2"]["ours"]["recovery_relu"] == pytest.approx(100.0)


@pytest.mark.filterwarnings("ignore")
def test_bench_joint_tiny(tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "joint.json"
    _run(
        "bench_joint.py",
        "--size",
        "64",
        "--batch-size",
        "2",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--variants",
        "deeplab",
        "joint_hard_ti",
        "--amp",  # ignored on CPU, as in the training CLI (the GPU check passes it)
        "--threads",
        "1",
        "--output",
        str(out),
    )
    data = json.loads(out.read_text())
    (entry,) = data.values()
    assert [r["variant"] for r in entry["rows"]] == ["deeplab", "joint_hard_ti"]
    assert entry["rows"][0]["time_ratio"] == pytest.approx(1.0)
    assert entry["rows"][1]["memory_ratio"] > 1.0  # the joint model saves more activations than DeepLabV3+
    parts = entry["breakdown"]["parts"]
    assert list(parts) == ["DeepLabV3+", "SpixelFCN", "superpixel ids", "uniformization", "fusion", "loss"]
    assert all(p["median_s"] > 0 for p in parts.values()) and parts["fusion"]["saved_bytes"] > 0


def test_bench_joint_rejects_batch_of_one():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_joint.py"), "--batch-size", "1"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "--batch-size must be >= 2" in proc.stderr and "got 1" in proc.stderr
