"""Smoke tests of the benchmark scripts: each runs end to end at a tiny size and writes a sane JSON.

They keep the scripts from rotting when the library changes; they assert correctness fields (agreement with a
reference, table structure), never timings. The subprocess smoke runs are marked ``slow`` (deselect them with
``-m "not slow"``; CI runs everything).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.read_only import deny_writes

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture(autouse=True)
def _restore_threads():
    """The benchmark functions set torch's thread count for their measurements: give it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _import(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def _run(script: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_peak_memory_where_neither_proc_nor_resource_exists(monkeypatch):
    """Windows has no ``/proc`` and no :mod:`resource`: the CPU memory figure is None, not a crash."""
    harness = _import("_harness")
    monkeypatch.setattr(harness, "resource", None)
    monkeypatch.setattr(harness, "_reset_peak_rss", lambda: False)
    memory = harness.PeakMemory("cpu")
    assert memory.method == "unavailable" and memory.extra_mib() is None
    assert harness.memory_fields(memory, fresh_process=True) == {
        "peak_rss_growth_mib": None,
        "memory_method": "unavailable",
    }
    monkeypatch.delattr(harness.os, "getloadavg")
    assert harness.load_average() is None and harness.environment("cpu")["load_average_at_start"] is None


@pytest.mark.parametrize(("platform", "unit"), [("linux", 1024), ("darwin", 2**20)])
def test_peak_memory_reads_ru_maxrss_in_the_unit_of_the_platform(platform, unit, monkeypatch):
    """Where the peak reset is refused, the growth of ``ru_maxrss`` is MiB as labelled: ``ru_maxrss`` is in
    KiB on Linux but in bytes on macOS, where a 2 MiB growth was reported as 2048 MiB."""
    from types import SimpleNamespace

    harness = _import("_harness")
    usage = SimpleNamespace(ru_maxrss=500 * unit)
    monkeypatch.setattr(harness, "_reset_peak_rss", lambda: False)
    monkeypatch.setattr(
        harness,
        "resource",
        SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: SimpleNamespace(**vars(usage))),
    )
    monkeypatch.setattr(harness.sys, "platform", platform)
    memory = harness.PeakMemory("cpu")
    usage.ru_maxrss += 2 * unit
    assert memory.method == "ru_maxrss" and memory.extra_mib() == 2.0


def test_benchmarks_run_without_the_posix_only_names(tmp_path):
    """On a Windows-like platform (no ``resource``, no ``os.getloadavg``) every benchmark script imports and
    one runs end to end, recording no load average; before, ``_harness`` failed to import ``resource`` and
    the scripts called ``os.getloadavg`` unguarded."""
    out = tmp_path / "ti.json"
    scripts = sorted(p.stem for p in BENCH.glob("*.py"))
    if importlib.util.find_spec("torchvision") is None:  # bench_joint builds the example's models
        scripts.remove("bench_joint")
    code = (
        "import importlib, runpy, sys\n"
        "from tests.windows_like import simulate\n"
        "simulate()\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        f"for name in {scripts!r}:\n"
        "    importlib.import_module(name)\n"
        "sys.argv = ['bench_transparent_init.py', '--quick', '--seeds', '1', '--threads', '1', '--out', "
        f"{str(out)!r}]\n"
        f"runpy.run_path({str(BENCH / 'bench_transparent_init.py')!r}, run_name='__main__')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"bench_uniformize", "bench_ops", "gpu_check", "_harness"} <= set(scripts)
    assert json.loads(out.read_text())["machine"]["load_average_at_start"] is None


@pytest.mark.slow
def test_bench_uniformize_quick(tmp_path):
    """The CPU default path: one fresh subprocess per (config, variant), then the sweep in another one."""
    out = tmp_path / "u.json"
    stdout = _run(
        "bench_uniformize.py",
        "--quick",
        "--repeats",
        "2",
        "--threads",
        "1",
        "--no-voronoi",
        "--num-superpixels",
        "64",
        "--variants",
        "scatter",
        "--out",
        str(out),
    )
    data = json.loads(out.read_text())
    assert data["meta"]["device"] == "cpu" and data["meta"]["auto_backend"] == "scatter"
    assert [c["config"]["N_s"] for c in data["configs"]] == [64]
    for cfg in data["configs"]:
        res = cfg["results"]
        assert set(res) == {"scatter"}
        assert res["scatter"]["max_abs_err"] < 1e-5, (cfg["name"], res["scatter"])
        assert res["scatter"]["fwd_bwd_ms"] > 0 and res["scatter"]["paired_x_floor"] > 0
        assert res["scatter"]["peak_extra_mb"] is not None  # a fresh process: the RSS growth is a figure
        ratios = res["scatter"]["paired_ratios"]
        assert len(ratios) == 2 and res["scatter"]["paired_x_floor"] == pytest.approx(
            sum(ratios) / 2
        )  # the median
    sweep = data["sweep"]
    assert [r["name"] for r in sweep["rows"]] == [c["name"] for c in data["configs"]]
    assert sweep["grid_max_over_min"] == 1.0  # one configuration
    assert "flatness in N_s" in stdout


def _peak_in_a_fresh_process(region: str, before: str = "") -> tuple[str, float]:
    """``PeakMemory('cpu')``'s method and ``extra_mib()`` around ``region`` in a new Python process
    (``before`` runs first, outside the region)."""
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from _harness import PeakMemory\n"
        f"{before}\nm = PeakMemory('cpu'); {region}\nprint(m.method, m.extra_mib())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "benchmarks")], capture_output=True, text=True, check=True
    )
    method, extra = out.stdout.split()
    return method, float(extra)


def test_peak_memory_is_not_hidden_by_memory_freed_before_it():
    """A region's growth counts in full even after a larger allocation was freed (the process's old peak)."""
    method, extra = _peak_in_a_fresh_process(
        "x = torch.ones(2**25); x.add_(1)  # 128 MiB inside the region",
        before="big = torch.ones(2**26); big.add_(1); del big  # a 256 MiB peak, freed",
    )
    if method == "ru_maxrss":
        pytest.skip(
            "this kernel refuses the peak reset (/proc/self/clear_refs): growth above the old peak only"
        )
    assert method == "vmhwm_reset" and 120 < extra < 160


def test_peak_memory_leaves_out_the_imports_of_the_first_backward():
    """A fresh process's first ``backward(gradient)`` imports about 490 modules (sympy, ...), 34 MiB of
    resident memory: inside the region, every fresh-process row carried it as the op's own (the floor of
    ``bench_uniformize.py``, 168 MiB of tensors, read 200-204 MiB). ``PeakMemory`` runs a tiny backward
    first."""
    method, extra = _peak_in_a_fresh_process(
        "v = torch.zeros(4, requires_grad=True); (v * 2).backward(torch.ones(4))  # 48 bytes of tensors"
    )
    if method == "ru_maxrss":
        pytest.skip("this kernel refuses the peak reset (/proc/self/clear_refs)")
    assert method == "vmhwm_reset" and extra < 4, extra


def test_tensor_peak_is_the_tensor_bytes_live_at_once_in_any_process():
    """The CPU memory figure of the tables: the peak of the tensor bytes live at once during one run (the
    floor's ``y`` and ``grad_x``: exactly two tensors of ``x``'s size), the same run after run and in this
    (reused) process, where the resident-set growth has no figure."""
    harness = _import("_harness")
    x = torch.randn(2**18, requires_grad=True)
    g = torch.randn(2**18)

    def floor() -> None:
        (x * 1).backward(g)
        x.grad = None

    peaks = [harness.tensor_peak_mib(floor) for _ in range(3)]  # 2 x 1 MiB (and a few bytes of scalars)
    assert peaks[0] == pytest.approx(2.0, abs=2**-10) and peaks == [peaks[0]] * 3
    assert harness.tensor_peak_mib(lambda: torch.empty(2**20).fill_(1)) == pytest.approx(4.0, abs=2**-10)
    fields = harness.memory_fields(harness.PeakMemory("cpu"), fresh_process=False, step=floor)
    assert fields["peak_rss_growth_mib"] is None and harness.peak_mib(fields) == peaks[0]


def test_the_resident_set_is_read_before_the_profiled_run(monkeypatch):
    """The tensor peak's profiled run allocates memory of its own (the profiler's): the resident-set figure
    of the same row is read before it (the first run of 2026-12-06 read it after, and its figures grew by
    60-130 MiB)."""
    harness = _import("_harness")
    order: list[str] = []
    memory = harness.PeakMemory("cpu")
    monkeypatch.setattr(memory, "extra_mib", lambda: order.append("rss") or 1.0)
    monkeypatch.setattr(harness, "tensor_peak_mib", lambda step: order.append("tensors") or 2.0)
    fields = harness.memory_fields(memory, fresh_process=True, step=lambda: None)
    assert order == ["rss", "tensors"] and fields["peak_rss_growth_mib"] == 1.0


def test_bench_uniformize_every_variant_in_process():
    """Each variant (the CUDA ones too) computes the uniformization; floor and copy are no op (no error)."""
    bench = _import("bench_uniformize")
    cfg = {"B": 2, "C": 3, "H": 32, "W": 24, "N_s": 16, "labels": "voronoi", "threads": 1}
    for variant in bench.VARIANTS:
        res = bench.run_one(cfg, variant, "cpu", 1, dense_max_gb=1.0, fresh_process=False)
        if variant == "torch_scatter" and "skipped" in res:
            continue
        assert res["fwd_bwd_ms"] > 0 and res["peak_extra_mb"] is None, (variant, res)
        if variant in bench.NOT_THE_OP:
            assert "max_abs_err" not in res
        else:
            assert res["max_abs_err"] < 1e-5, (variant, res)
    with pytest.raises(ValueError, match="variant must be one of"):
        bench.run_one(cfg, "csr", "cpu", 1, dense_max_gb=1.0)


def test_bench_uniformize_leaves_the_warning_filters_alone():
    """A measurement neither warns nor changes the process's warning filters: before, it ignored every
    warning from then on (``warnings.simplefilter("ignore")``), hiding any our ops raise, ``-W error`` too."""
    bench = _import("bench_uniformize")
    cfg = {"B": 1, "C": 2, "H": 16, "W": 16, "N_s": 4, "labels": "grid", "threads": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        before = list(warnings.filters)
        for variant in ("scatter", "sparse", "sparse_coo", "paper_coo", "dense_bmm"):
            bench.run_one(cfg, variant, "cpu", 1, dense_max_gb=1.0, fresh_process=False)
        bench.run_sweep([cfg], "cpu", 1)
        assert warnings.filters == before


def test_bench_uniformize_configs():
    bench = _import("bench_uniformize")
    default = bench.configs(False)
    assert [(c["B"], c["N_s"], c["labels"]) for c in default] == [
        (4, 256, "grid"),
        (4, 1024, "grid"),
        (4, 4096, "grid"),
        (4, 16384, "grid"),
        (4, 1024, "voronoi"),
    ]
    gpu = bench.configs(False, batch_size=8, num_superpixels=[1024, 4096, 16384], voronoi=False)
    assert [(c["B"], c["C"], c["H"], c["W"], c["N_s"]) for c in gpu] == [
        (8, 21, 512, 512, n) for n in (1024, 4096, 16384)
    ]
    assert [c["N_s"] for c in bench.configs(True)] == [64, 256, 64]


def test_bench_uniformize_run_one_dense_budget_skip():
    bench_uniformize = _import("bench_uniformize")
    cfg = {"B": 1, "C": 3, "H": 64, "W": 64, "N_s": 64, "labels": "grid", "threads": 1}
    skipped = bench_uniformize.run_one(cfg, "dense_bmm", "cpu", 1, dense_max_gb=1e-6)
    assert "budget" in skipped["skipped"]
    ran = bench_uniformize.run_one(cfg, "dense_bmm", "cpu", 1, dense_max_gb=1.0)
    assert ran["max_abs_err"] < 1e-5


def test_bench_soft_in_process(tmp_path):
    bench_soft = _import("bench_soft")
    out = tmp_path / "soft.json"
    data = bench_soft.main(["--quick", "--in-process", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert data["quick"] is True and data["in_process"] is True and data["device"] == "cpu"
    assert data["soft"]["max_abs_diff_f64"] < 1e-10
    assert {(r["impl"], r["C"]) for r in data["soft"]["rows"]} == {
        (impl, c) for impl in ("block", "nine_shift", "scatter") for c in (2, 21)
    }
    assert all(r["peak_rss_growth_mib"] is None for r in data["soft"]["rows"])  # no figure in-process
    assert data["segnet_unpool"]["paired_ratio_to_nn"] > 0


@pytest.mark.slow
def test_bench_soft_workers_in_subprocesses():
    """The CPU default path: every measurement in a fresh subprocess, its peak RSS growth reported."""
    soft = json.loads(
        _run("bench_soft.py", "--threads", "1", "--worker", "soft", "block", "1", "2", "32", "32", "16", "2")
    )
    assert soft["impl"] == "block" and soft["C"] == 2 and len(soft["times_ms"]) == 2
    assert soft["peak_rss_growth_mib"] >= 0
    paired = json.loads(
        _run("bench_soft.py", "--threads", "1", "--worker", "unpool_paired", "1", "4", "32", "32", "3")
    )
    assert paired["paired_ratio_to_nn"] > 0 and paired["repeats"] == 3


@pytest.mark.slow
def test_bench_ops_quick(tmp_path):
    """Every op at tiny sizes: checked against its alternative (float64 or exactly), then both timed."""
    bench = _import("bench_ops")
    out = tmp_path / "ops.json"
    stdout = _run("bench_ops.py", "--quick", "--threads", "1", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["all_passed"] is True
    meta = data["meta"]
    assert meta["quick"] is True and meta["in_process"] is True and meta["device"] == "cpu"
    assert meta["cpu_model"] == _import("_harness").cpu_model() and meta["threads"] == 1
    assert list(data["ops"]) == list(bench.CASES)
    for name, entry in data["ops"].items():
        case = bench.CASES[name]
        assert (entry["op"], entry["alternative"], entry["timed"]) == (case.op, case.alternative, case.timed)
        check = entry["check"]
        assert check["passed"] is True, (name, check)
        if case.exact:
            assert check["kind"] == "exact"
        else:
            assert check["kind"] == "float64" and check["max_rel_diff"] <= bench.CHECK_TOLERANCE, (
                name,
                check,
            )
        ours, alt = entry["rows"]
        assert (ours["impl"], alt["impl"]) == ("ours", "alternative")
        assert len(ours["times_ms"]) == len(alt["times_ms"]) == entry["repeats"] == 2
        assert entry["ratio_to_alternative"] == pytest.approx(ours["median_ms"] / alt["median_ms"])
        ratios = ours["paired_ratios"]
        assert len(ratios) == 2 and entry["paired_ratio_to_alternative"] == pytest.approx(sum(ratios) / 2)
        assert ours["peak_rss_growth_mib"] is None and alt["peak_rss_growth_mib"] is None  # in this process
    assert "ours / alternative" in stdout


@pytest.mark.slow
def test_bench_ops_measures_in_subprocesses(tmp_path):
    """A full run's path: the check here, then each implementation in a fresh subprocess with its peak RSS
    growth, the paired ratio from the library's subprocess."""
    out = tmp_path / "ops.json"
    argv = ["--ops", "relabel_contiguous", "--batch-size", "1", "--repeats", "3", "--threads", "1"]
    _run("bench_ops.py", *argv, "--out", str(out))
    data = json.loads(out.read_text())
    assert data["all_passed"] is True and data["meta"]["in_process"] is False
    (entry,) = data["ops"].values()
    assert entry["config"] == {"B": 1, "H": 512, "W": 512, "N_s": 1024} and entry["check"]["passed"] is True
    ours, alt = entry["rows"]
    assert len(ours["times_ms"]) == len(alt["times_ms"]) == 3
    assert ours["peak_rss_growth_mib"] >= 0 and alt["peak_rss_growth_mib"] >= 0  # fresh processes: figures
    assert entry["paired_ratio_to_alternative"] == sorted(ours["paired_ratios"])[1]
    assert "paired_ratios" not in alt


@pytest.mark.parametrize("name", ["pool_sum", "relabel_contiguous"])
def test_bench_ops_check_refuses_a_wrong_alternative(name, monkeypatch, capsys):
    """An alternative that computes something else fails the check (float64 or exact); the op is not timed
    and the run exits with an error."""
    import dataclasses

    bench = _import("bench_ops")
    case = bench.CASES[name]

    def off_by_one(inp):
        first, *rest = bench._outputs(case.alt(inp))
        return (first + 1, *rest) if rest else first + 1

    monkeypatch.setitem(bench.CASES, name, dataclasses.replace(case, alt=off_by_one))
    with pytest.raises(SystemExit, match="a check failed"):
        bench.main(["--quick", "--threads", "1", "--ops", name])
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "not timed" in printed


def test_bench_ops_refuses_bad_options(capsys):
    bench = _import("bench_ops")
    for argv, message in (
        (["--ops", "pool_mean,pool_median"], "--ops: unknown ['pool_median']"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ):
        with pytest.raises(SystemExit):
            bench.main(argv)
        assert message in capsys.readouterr().err


def test_cpu_model_names_the_cpu():
    """Result files name the CPU: the first ``model name`` of /proc/cpuinfo (Linux), then its family and model
    numbers and ISA flags."""
    harness = _import("_harness")
    model = harness.cpu_model()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        assert model
        return
    text = cpuinfo.read_text()

    def first(key: str) -> str | None:
        values = [
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.split(":")[0].strip() == key
        ]
        return values[0] if values else None

    flags = (first("flags") or "").split()
    expected_isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    numbers = [
        f"{label} {first(key)}" for key, label in (("cpu family", "family"), ("model", "model")) if first(key)
    ]
    details = "; ".join(part for part in (", ".join(numbers), ", ".join(expected_isa)) if part)
    expected = first("model name") or model.split(" (")[0]
    assert model == (f"{expected} ({details})" if details else expected)
    assert harness.environment("cpu")["cpu_model"] == model


@pytest.mark.slow
def test_bench_transparent_init_quick(tmp_path):
    out = tmp_path / "ti.json"
    _run("bench_transparent_init.py", "--quick", "--threads", "1", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["seeds"] == 3
    # transparent stacks reproduce their input: worst error at r = 1 far below the paper's 1e-4 recovery bar
    assert data["table3"]["ours_relu"]["1"]["worst"] < 1e-5
    assert data["table2"]["ours"]["recovery_relu"] == pytest.approx(100.0)
    assert data["widths"]["256 relu"]["1"]["worst"] < 1e-5  # the width table (up to 256 in --quick)
    assert data["machine"]["cpu_model"] == _import("_harness").cpu_model()


def test_bench_transparent_init_memory_figure_is_every_layer_output_as_its_docstring_says():
    """``activations_per_forward`` sums the outputs of all five layers (42-128-128-42 with two ReLUs), as the
    concept page says ("layer outputs per forward"); the script's docstring called it the activations kept for
    backward, which exclude the two convolution outputs a ReLU follows."""
    bench = _import("bench_transparent_init")
    memory = bench.cost(1, (1, bench.C, 4, 4))["memory_mib"]
    assert memory["activations_per_forward"] == (128 + 128 + 128 + 128 + 42) * 16 * 4 / 2**20
    assert (
        "kept for backward)" not in bench.__doc__ and "outputs of every layer of one forward" in bench.__doc__
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.examples
def test_bench_joint_tiny(tmp_path):
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
        "--threads",
        "1",
        "--variants",
        "deeplab",
        "joint_hard_ti",
        "--amp",  # ignored on CPU, as in the training CLI (the GPU check passes it)
        "--formats",
        "--out",
        str(out),
    )
    data = json.loads(out.read_text())
    (entry,) = data.values()
    assert [r["variant"] for r in entry["rows"]] == ["deeplab", "joint_hard_ti"]
    # the memory-format study: each network alone in both formats, with the default this device uses
    formats = {r["network"]: r for r in entry["formats"]}
    assert list(formats) == ["deeplab", "spixelfcn"]
    assert [formats[n]["default_channels_last"] for n in formats] == [False, True]  # the CPU's defaults
    for r in formats.values():
        assert r["nchw_s"] > 0 and r["channels_last_s"] > 0
        assert r["time_ratio"] == pytest.approx(r["channels_last_s"] / r["nchw_s"])
        assert len(r["samples_nchw_s"]) == len(r["samples_channels_last_s"]) == 1
    assert entry["rows"][0]["time_ratio"] == pytest.approx(1.0)
    assert entry["rows"][1]["memory_ratio"] > 1.0  # the joint model saves more activations than DeepLabV3+
    parts = entry["breakdown"]["parts"]
    assert list(parts) == ["DeepLabV3+", "SpixelFCN", "superpixel ids", "uniformization", "fusion", "loss"]
    assert all(p["median_s"] > 0 for p in parts.values()) and parts["fusion"]["saved_bytes"] > 0
    assert entry["machine"]["cpu_model"] == _import("_harness").cpu_model()


@pytest.mark.slow
@pytest.mark.examples
def test_bench_joint_rejects_batch_of_one():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_joint.py"), "--batch-size", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert "--batch-size must be >= 2" in proc.stderr and "got 1" in proc.stderr


@pytest.mark.slow
def test_ab_uniformize_against_the_same_checkout(tmp_path):
    """Two workers per N_s, each importing the package of the checkout it was given, in alternating order."""
    out = tmp_path / "ab.json"
    stdout = _run(
        "ab_uniformize.py",
        "--previous",
        str(ROOT),
        "--num-superpixels",
        "4",
        "16",
        "--size",
        "16",
        "--batch-size",
        "1",
        "--channels",
        "3",
        "--rounds",
        "2",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--channels-last",
        "--out",
        str(out),
    )
    data = json.loads(out.read_text())
    assert data["config"]["channels_last"] is True
    assert [(r["N_s"], r["code"]) for r in data["runs"]] == [
        (4, "previous"),
        (4, "current"),
        (16, "current"),
        (16, "previous"),
    ]
    for r in data["runs"]:
        assert r["floor_ms"] > 0 and r["op_ms"] > 0 and r["paired_x_floor"] > 0
    assert data["meta"]["cpu_model"] and data["config"]["previous"] == str(ROOT)
    assert "previous x floor" in stdout


def test_ab_uniformize_refuses_bad_options(capsys):
    ab = _import("ab_uniformize")
    for argv, message in (
        (["--previous", str(BENCH)], "--previous: not a checkout"),
        (["--previous", str(ROOT), "--num-superpixels", "10"], "squares of at most --size ** 2"),
        (["--previous", str(ROOT), "--size", "4", "--num-superpixels", "25"], "squares of at most"),
        (["--previous", str(ROOT), "--rounds", "0"], "--rounds must be >= 1, got 0"),
        # a repeated N_s was measured again and printed as two table rows, each with the runs of both
        (
            ["--previous", str(ROOT), "--num-superpixels", "4", "4"],
            "--num-superpixels must be distinct, got [4, 4]",
        ),
    ):
        with pytest.raises(SystemExit):
            ab.main(argv)
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_ab_fusion_against_the_same_checkout(tmp_path):
    """Both sides are this checkout's fused_stack, loaded twice by path: every row bit-identical, ratios and
    medians present, the table printed and the JSON written."""
    out = tmp_path / "ab.json"
    sizes = ["--sizes", "8", "16", "--rounds", "2", "--threads", "1"]
    stdout = _run("ab_fusion.py", "--previous", str(ROOT), *sizes, "--out", str(out))
    data = json.loads(out.read_text())
    rows = [(r["size"], r["recompute"]) for r in data["rows"]]
    assert rows == [(8, False), (8, True), (16, False), (16, True)]
    for r in data["rows"]:
        assert r["bit_identical"] is True and r["not_identical"] == [] and r["max_abs_diff"] == 0.0
        assert r["previous_ms"] > 0 and r["current_ms"] > 0 and r["paired_ratio"] > 0
    assert data["config"]["previous"] == str(ROOT) and data["config"]["hidden"] == [64, 64]
    assert data["meta"]["cpu_model"] and data["meta"]["chunk"] == 16384  # FusionStack.cpu_chunk_rows
    assert "paired ratio" in stdout and "bit-identical" in stdout and f"written to {out}" in stdout


#: The line of fused_stack's backward that rounds the weight gradients, and a copy that scales them.
_WEIGHT_GRADIENT = "None if gw is None else gw.to(w.dtype)"
_SCALED = "None if gw is None else (gw * (1 + 2**-20)).to(w.dtype)"
# the same deliberate change in the convolutions' form (the float32 CPU default)
_CONV_WEIGHT_GRADIENT = "(total[:, :c] if layer == 0 and u_cells else total).add_(gw)"
_CONV_SCALED = "(total[:, :c] if layer == 0 and u_cells else total).add_(gw * (1 + 2**-20))"


def _previous_checkout(tmp_path: Path, source: str, conv_source: str | None = None) -> Path:
    """A folder laid out like a checkout whose fused_stack.py is ``source``, beside this checkout's other
    model modules (the helpers it imports; fused_conv_stack.py: ``conv_source`` if given)."""
    models = ROOT / "examples" / "voc_joint" / "models"
    module = tmp_path / "previous" / "examples" / "voc_joint" / "models" / "fused_stack.py"
    module.parent.mkdir(parents=True)
    for helper in models.glob("*.py"):
        (module.parent / helper.name).write_text(helper.read_text())
    module.write_text(source)
    if conv_source is not None:
        (module.parent / "fused_conv_stack.py").write_text(conv_source)
    return (tmp_path / "previous").resolve()


def test_ab_fusion_leaves_this_checkouts_fusion_operators_working(tmp_path):
    """ab_fusion.py loads a previous checkout's fused stack into this process; its fused_conv_stack.py
    registers the same operator names (``transinit_examples::add_rows_``, the sign bits), and torch.library
    replaces a registered name by destroying the first registration. This checkout's stack called its own
    operator objects, so after such a load its superpixel pooling failed ("Tried to access the schema for
    which doesn't have a schema registered yet"; in CI, every later test of that worker that ran the hard
    fusion on the CPU). It looks the operators up by name at each call: both copies now work."""
    import sparse_ops
    from examples.voc_joint.models.joint import FusionStack

    ab = _import("ab_fusion")
    previous = _previous_checkout(tmp_path, (ROOT / ab.MODULE).read_text())
    parser = ab.build_parser()
    loaded = ab.load_fused_stack(parser, previous, "--previous")
    ids = torch.arange(16).remainder(3).view(1, 4, 4)
    assignment = sparse_ops.SuperpixelAssignment(ids, 3)
    s = torch.randn(1, 3, 4, 4, requires_grad=True)
    fuse = FusionStack(3, [6])
    if not fuse.folds_uniformization(s.device):
        pytest.skip("the fused stack does not pool on this build (no oneDNN products)")
    out = fuse(s, None, recompute=True, uniformize=(ids, assignment))  # this checkout's stack, pooled
    out.sum().backward()
    torch.testing.assert_close(out.detach(), assignment.uniformize(s.detach()), atol=1e-5, rtol=1e-5)
    assert s.grad is not None and bool(torch.isfinite(s.grad).all())
    assert callable(loaded)


def test_ab_fusion_reports_a_backward_that_is_not_bit_identical(tmp_path, capsys):
    """A previous fused_stack whose weight gradients are scaled by 1 + 2**-20: the rows say which tensors
    differ (the weights' gradients only), by how much, and the table shows it."""
    ab = _import("ab_fusion")
    source = (ROOT / ab.MODULE).read_text()
    conv_source = (ROOT / ab.MODULE).with_name("fused_conv_stack.py").read_text()
    assert source.count(_WEIGHT_GRADIENT) == 1, "the anchor of the deliberate change moved"
    assert conv_source.count(_CONV_WEIGHT_GRADIENT) == 1, "the anchor of the deliberate change moved"
    previous = _previous_checkout(
        tmp_path,
        source.replace(_WEIGHT_GRADIENT, _SCALED),
        conv_source.replace(_CONV_WEIGHT_GRADIENT, _CONV_SCALED),
    )
    data = ab.main(["--previous", str(previous), "--sizes", "8", "--hidden", "8", "--channels", "3",
                    "--batch-size", "1", "--rounds", "1", "--threads", "1"])  # fmt: skip
    assert [(r["size"], r["recompute"]) for r in data["rows"]] == [(8, False), (8, True)]
    for r in data["rows"]:
        assert r["bit_identical"] is False and r["max_abs_diff"] > 0
        assert r["not_identical"] == ["weight 0", "weight 1"]  # one hidden layer: two weights
    table = capsys.readouterr().out.splitlines()[-2:]
    assert [line.split()[:2] + line.split()[-2:-1] for line in table] == [
        ["8", "False", "False"],
        ["8", "True", "False"],
    ]


def test_ab_fusion_refuses_bad_options(tmp_path, capsys):
    ab = _import("ab_fusion")
    no_function = _previous_checkout(tmp_path / "a", "fused_stack = None\n")
    old_import = _previous_checkout(tmp_path / "b", "from sparse_ops.soft import _gone\n")  # a renamed helper
    for argv, message in (
        (["--previous", str(BENCH)], "--previous: not a checkout of this repository (no examples/"),
        (["--previous", ""], "--previous: expected a checkout, got ''"),
        (["--previous", str(no_function)], f"--previous: {no_function / ab.MODULE} must define a callable"),
        (["--previous", str(old_import)], f"--previous: cannot load {old_import / ab.MODULE}: ImportError"),
        (["--sizes", "0"], "--sizes must be distinct sides in [1, 16384], got [0]"),
        (["--sizes", "8", "8"], "--sizes must be distinct sides"),
        (["--hidden", "41"], "--hidden widths must be in [2 x --channels = 42, 8192], got [41]"),
        (["--activation", "gelu"], "argument --activation: invalid choice: 'gelu'"),
        (["--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            ab.main(argv if argv[0] == "--previous" else ["--previous", str(ROOT), *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv


# ------------------------------------------------------------------------ the statistics behind the figures
class _Clocks:
    """Fake wall and CPU clocks that only the fake steps advance (the CPU clock twice as fast)."""

    def __init__(self) -> None:
        self.wall = 0.0

    def step(self, *durations: float):
        it = iter(durations)

        def run() -> None:
            self.wall += next(it)

        return run

    def namespace(self):
        from types import SimpleNamespace

        return SimpleNamespace(perf_counter=lambda: self.wall, process_time=lambda: 2 * self.wall)


@pytest.mark.examples
def test_bench_joint_time_steps_median_min_clock_and_rounds(monkeypatch):
    """Per step: the median and the min of the timed rounds (after untimed warm-up steps), every round's
    sample kept; ``--clock cpu`` reads the process time; ``rounds`` overrides ``--rounds``."""
    import argparse

    bench = _import("bench_joint")
    clocks = _Clocks()
    monkeypatch.setattr(bench, "time", clocks.namespace())
    args = argparse.Namespace(warmup=1, rounds=3, clock="wall")
    steps = {"a": clocks.step(9.0, 1.0, 5.0, 2.0), "b": clocks.step(9.0, 4.0, 4.0, 1.0)}
    times = bench.time_steps(steps, args, torch.device("cpu"))
    faults = times["a"].pop("minor_faults")  # the page faults of a step: counted, not faked here
    assert faults is None or faults >= 0
    assert times["a"] == {"median_s": 2.0, "min_s": 1.0, "samples": 3, "samples_s": [1.0, 5.0, 2.0]}
    assert times["b"]["median_s"] == 4.0 and times["b"]["samples_s"] == [4.0, 4.0, 1.0]
    args.clock = "cpu"
    times = bench.time_steps({"a": clocks.step(9.0, 1.0, 3.0)}, args, torch.device("cpu"), rounds=2)
    assert times["a"]["samples_s"] == [2.0, 6.0]


@pytest.mark.examples
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="minor page faults counted as on Linux")
def test_bench_joint_counts_the_page_faults_of_a_step():
    """A step that writes 64 MiB of freshly mapped memory faults its pages in; one that allocates nothing
    does not (a count that cannot tell them apart would explain nothing)."""
    import argparse
    import mmap

    bench = _import("bench_joint")
    args = argparse.Namespace(warmup=0, rounds=3, clock="wall")

    def touch() -> None:
        with mmap.mmap(-1, 64 * 2**20) as m:  # anonymous pages: new to the process each time
            m.write(b"x" * (64 * 2**20))

    times = bench.time_steps({"touch": touch, "idle": lambda: None}, args, torch.device("cpu"))
    assert times["touch"]["minor_faults"] >= 16  # 64 MiB: 16384 4-KiB pages, or 32 huge pages
    assert times["idle"]["minor_faults"] < times["touch"]["minor_faults"]


@pytest.mark.examples
def test_bench_joint_paired_ratio_is_the_median_of_round_ratios():
    bench = _import("bench_joint")
    a, b = {"samples_s": [2.0, 4.0, 9.0]}, {"samples_s": [1.0, 4.0, 3.0]}
    assert bench.paired_ratio(a, b) == 2.0  # ratios 2, 1, 3 (the ratio of the medians would be 4 / 3)


@pytest.mark.examples
def test_bench_joint_medians_of_an_even_count_of_rounds_are_the_mean_of_the_middle_two(monkeypatch):
    """``--rounds`` may be even: the step's median, its page-fault median and the paired ratio are then the
    mean of the two middle values (not the upper or the lower one), and rounds are paired one to one (a
    sample list shorter than the other is refused, not cut to the shorter)."""
    import argparse

    bench = _import("bench_joint")
    clocks = _Clocks()
    monkeypatch.setattr(bench, "time", clocks.namespace())
    counts = iter([0, 10, 10, 40, 40, 41, 41, 61])  # before / after each round: 10, 30, 1 and 20 faults
    monkeypatch.setattr(bench, "minor_faults", lambda: next(counts))
    args = argparse.Namespace(warmup=0, rounds=4, clock="wall")
    (times,) = bench.time_steps({"a": clocks.step(1.0, 4.0, 2.0, 8.0)}, args, torch.device("cpu")).values()
    assert times["median_s"] == 3.0 and times["min_s"] == 1.0 and times["minor_faults"] == 15.0
    a, b = {"samples_s": [2.0, 9.0, 4.0, 1.0]}, {"samples_s": [1.0, 3.0, 4.0, 1.0]}
    assert bench.paired_ratio(a, b) == 1.5  # ratios 2, 3, 1, 1
    with pytest.raises(ValueError, match="shorter"):
        bench.paired_ratio(a, {"samples_s": [1.0, 3.0, 4.0]})


@pytest.mark.examples
def test_bench_joint_saved_bytes_count_each_storage_once_without_the_parameters():
    """``SavedBytes``: the bytes of the distinct storages autograd saves for backward; a saved view counts
    its whole storage, once however many views of it are saved; the excluded module's parameters (saved
    as their transposes) are left out, and counted without ``exclude``."""
    from torch import nn

    bench = _import("bench_joint")
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))  # weights of 80 and 60 bytes
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)  # 128 bytes
    with bench.SavedBytes(model) as saved:
        # saved: the view x[:2], W1.t(), the 2 x 5 hidden output (40 bytes) and W2.t(); exp's 6 x 4 output
        # (96 bytes); sin's input, the view x[4:6] of the same storage as x[:2]
        kept = [model(x[:2]), x[2:].exp(), x[4:6].sin()]
    assert saved.total == 128 + 40 + 96
    with bench.SavedBytes() as everything:
        kept.append(model(x[:2]))
    assert everything.total == 128 + 40 + 80 + 60


@pytest.mark.examples
def test_bench_joint_saved_activation_bytes_leave_out_the_models_parameters(monkeypatch):
    """The activation memory of a variant is what its forward saves, not its weights (which autograd saves
    too, for the input gradient)."""
    from torch import nn

    bench = _import("bench_joint")
    model = nn.Linear(4, 3)  # its weight, 48 bytes, saved as its transpose
    x = torch.ones(2, 4, requires_grad=True)  # saved for the weight's gradient: 32 bytes
    monkeypatch.setattr(bench, "build_model", lambda *rest: model)
    monkeypatch.setattr(bench, "make_batch", lambda *rest: (x, None))
    monkeypatch.setattr(bench, "loss_of", lambda variant, m, x, *rest: m(x).sum())
    args = argparse.Namespace(amp=False)
    assert bench.saved_activation_bytes("deeplab", args, torch.device("cpu"), {}) == 32


@pytest.mark.examples
def test_bench_joint_breakdown_saved_bytes_leave_out_the_models_parameters(monkeypatch):
    """Every part's saved bytes exclude the joint model's parameters, as the main table's do."""
    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(["--threads", "1", "--size", "16", "--rounds", "1"])
    args.channels_last = bench.DEFAULT_CHANNELS_LAST.get("cpu", False)  # as main sets it
    opts = bench.default_options(args)
    model = bench.build_model("joint_hard_ti", args, torch.device("cpu"), opts)
    excluded = []

    class Recorded(bench.SavedBytes):
        def __init__(self, exclude=None):
            excluded.append(exclude)
            super().__init__(exclude)

    monkeypatch.setattr(bench, "SavedBytes", Recorded)
    monkeypatch.setattr(bench, "time_steps", lambda steps, *rest: {k: {"median_s": 1.0} for k in steps})
    parts = bench.breakdown(args, torch.device("cpu"), opts, model)
    assert len(excluded) == len(parts) == len(bench.BREAKDOWN_PARTS)
    assert all(m is model for m in excluded)


def _fake_times(samples: dict[str, list[float]]) -> dict[str, dict]:
    import statistics

    return {
        k: {"median_s": statistics.median(s), "min_s": min(s), "samples": len(s), "samples_s": s}
        for k, s in samples.items()
    }


@pytest.mark.examples
def test_bench_joint_rows_are_ratios_to_deeplab_of_the_same_run(monkeypatch):
    """time_ratio = step / deeplab's step, time_ratio_paired = median of the round ratios, memory_ratio on
    CUDA from the allocator peak (on CPU from the saved activations), saved_ratio from saved activations."""
    bench = _import("bench_joint")
    samples = {"deeplab": [1.0, 2.0, 4.0], "joint_hard_ti": [1.5, 5.0, 4.0]}
    saved = {"deeplab": 100, "joint_hard_ti": 250}
    peak = {"deeplab": 1000, "joint_hard_ti": 1200}
    monkeypatch.setattr(bench, "make_step", lambda v, *rest: (None, v))
    monkeypatch.setattr(
        bench, "time_steps", lambda steps, *rest, **kw: _fake_times({v: samples[v] for v in steps})
    )
    monkeypatch.setattr(bench, "saved_activation_bytes", lambda v, *rest: saved[v])
    monkeypatch.setattr(bench, "peak_memory_cuda", lambda v, *rest: peak[v])
    # make_step's step is the variant's name here: the FLOPs are counted on the timed steps themselves
    monkeypatch.setattr(bench, "step_flops", lambda step, *rest: {"deeplab": 40, "joint_hard_ti": 58}[step])
    variants = ["deeplab", "joint_hard_ti"]
    cuda = {r["variant"]: r for r in bench.measure_pair_set(variants, None, torch.device("cuda"), {})}
    joint = cuda["joint_hard_ti"]
    assert joint["flops"] == 58 and joint["flop_ratio"] == pytest.approx(1.45)
    assert joint["time_ratio"] == pytest.approx(4.0 / 2.0)
    assert joint["time_ratio_paired"] == pytest.approx(1.5)  # ratios 1.5, 2.5, 1.0
    assert joint["memory_ratio"] == pytest.approx(1.2) and joint["saved_ratio"] == pytest.approx(2.5)
    assert joint["memory_bytes"] == {"saved_activations": 250, "cuda_peak_allocated": 1200}
    assert cuda["deeplab"]["time_ratio"] == cuda["deeplab"]["time_ratio_paired"] == 1.0
    cpu = {r["variant"]: r for r in bench.measure_pair_set(variants, None, torch.device("cpu"), {})}
    assert cpu["joint_hard_ti"]["memory_ratio"] == pytest.approx(2.5)


@pytest.mark.examples
def test_bench_joint_format_study_is_channels_last_over_nchw(monkeypatch):
    """The docs quote these ratios (below 1: channels_last is faster)."""
    import argparse

    bench = _import("bench_joint")
    samples = {
        "deeplab NCHW": [2.0, 2.0, 2.0], "deeplab channels_last": [2.0, 2.2, 2.4],
        "spixelfcn NCHW": [1.0, 2.0, 1.0], "spixelfcn channels_last": [0.9, 1.0, 0.8],
    }  # fmt: skip
    monkeypatch.setattr(bench, "make_step", lambda *rest: (None, None))
    monkeypatch.setattr(
        bench, "time_steps", lambda steps, *rest, **kw: _fake_times({k: samples[k] for k in steps})
    )
    rows = {r["network"]: r for r in bench.format_study(argparse.Namespace(), torch.device("cpu"), "head")}
    assert rows["deeplab"]["time_ratio"] == pytest.approx(1.1) and rows["deeplab"]["time_ratio_paired"] == 1.1
    spx = rows["spixelfcn"]
    assert spx["time_ratio"] == pytest.approx(0.9) and spx["time_ratio_paired"] == pytest.approx(0.8)
    assert spx["samples_nchw_s"] == samples["spixelfcn NCHW"]


@pytest.mark.examples
def test_bench_joint_lever_ratios_use_deeplab_in_the_same_memory_format(monkeypatch):
    import argparse

    bench = _import("bench_joint")
    monkeypatch.setattr(bench, "make_step", lambda variant, args, device, lever: (None, lambda: None))
    monkeypatch.setattr(bench, "refine_step", lambda *rest: lambda: None)

    def times(steps, *rest, **kw):
        base = {"deeplab NCHW": 2.0, "deeplab channels_last": 4.0}
        return _fake_times({k: [base.get(k, 8.0)] for k in steps})

    def saved(variant, args, device, opts):
        return (100 if opts.get("channels_last") is True else 50) * (2 if variant == "joint_hard_ti" else 1)

    monkeypatch.setattr(bench, "time_steps", times)
    monkeypatch.setattr(bench, "saved_activation_bytes", saved)
    rows = {
        r["lever"]: r for r in bench.lever_study(argparse.Namespace(rounds=1), torch.device("cpu"), "head")
    }
    nchw, cl = rows["plain: cat([S, U]), NCHW, ids validated"], rows["+ channels_last end to end"]
    assert (nchw["time_ratio"], nchw["saved_ratio"], nchw["deeplab_s"]) == (4.0, 2.0, 2.0)
    assert (cl["time_ratio"], cl["saved_ratio"], cl["deeplab_s"]) == (2.0, 2.0, 4.0)


# the key's part of the tests' quick runs (``--variants deeplab --threads 1``): their own entry, beside the
# default run's (bench_joint.entry_key)
QUICK = "_variants-deeplab_threads1"


@pytest.mark.examples
def test_bench_joint_a_run_off_the_defaults_is_written_beside_the_default_runs_entry(
    tmp_path, monkeypatch, capsys
):
    """Only the fusion widths were in the key: the docs' own ``--variants deeplab --no-breakdown --formats``
    (or a ``--threads 1``, ``--no-recompute-fusion``, ``--cell-size`` run) replaced the committed entry of the
    default run (every variant, its breakdown and lever study) with its one row, without a word. Each option
    that changes what is measured now names its own entry; a run of the same key says what it replaces."""
    bench = _import("bench_joint")
    p = bench.build_parser()
    cpu = torch.device("cpu")

    def key(*argv: str) -> str:
        return bench.entry_key(p, p.parse_args(list(argv)), cpu, False)

    assert key() == "cpu_resnet18_b2_128"
    assert key("--variants", *bench.VARIANTS) == "cpu_resnet18_b2_128"  # the default set, named in full
    assert (
        key("--variants", "deeplab", "joint_hard_ti") == "cpu_resnet18_b2_128_variants-deeplab+joint_hard_ti"
    )
    assert key("--fusion-hidden", "64", "--threads", "1") == "cpu_resnet18_b2_128_fusion64_threads1"
    assert key("--cell-size", "8", "--clock", "cpu") == "cpu_resnet18_b2_128_cell-size8_clock-cpu"
    recompute = p.get_default("recompute")
    flip = "--no-recompute-fusion" if recompute else "--recompute-fusion"
    assert key(flip, "--no-freeze-bn") == (
        f"cpu_resnet18_b2_128_{'no-' if recompute else ''}recompute-fusion_no-freeze-bn"
    )
    assert key("--channels-last") == "cpu_resnet18_b2_128_channels-last"  # given, not the per-network default
    assert key("--no-channels-last") == "cpu_resnet18_b2_128_no-channels-last"
    assert key("--rounds", "3", "--warmup", "0", "--out", "x.json") == "cpu_resnet18_b2_128"  # precision only

    out = tmp_path / "joint.json"
    committed = {
        "rows": ["all four"],
        "breakdown": {},
        "levers": {},
        "machine": {"time": "2026-12-05 10:00 UTC"},
    }
    out.write_text(json.dumps({"cpu_resnet18_b2_128": committed}))
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [])
    monkeypatch.setattr(bench, "format_study", lambda *rest: {"study": "formats"})
    bench.main(["--variants", "deeplab", "--no-breakdown", "--formats", "--threads", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["cpu_resnet18_b2_128"] == committed
    assert data["cpu_resnet18_b2_128" + QUICK]["formats"] == {"study": "formats"}
    first = json.loads(out.read_text())["cpu_resnet18_b2_128" + QUICK]
    capsys.readouterr()
    bench.main(["--variants", "deeplab", "--no-breakdown", "--threads", "1", "--out", str(out)])
    said = capsys.readouterr().out
    assert f"it replaces the entry of {first['machine']['time']}" in said
    assert "which also held: formats (this run has none)" in said
    bench.main(["--variants", "deeplab", "--no-breakdown", "--threads", "1", "--out", str(out)])
    said = capsys.readouterr().out  # the same parts as the entry it replaces: nothing more to say
    assert "it replaces the entry of " in said and "which also held" not in said


@pytest.mark.examples
def test_bench_joint_keeps_the_other_entries_of_its_output_file(tmp_path, monkeypatch):
    """Each run replaces its own key (device, backbone, batch, size) of the JSON file, never the others."""
    bench = _import("bench_joint")
    out = tmp_path / "joint.json"
    out.write_text(json.dumps({"cuda_resnet101_b8_512_amp": {"rows": ["kept"]}, "cpu": {"old": "layout"}}))
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [])
    bench.main(["--no-breakdown", "--threads", "1", "--variants", "deeplab", "--out", str(out)])
    data = json.loads(out.read_text())
    assert list(data) == ["cuda_resnet101_b8_512_amp", "cpu_resnet18_b2_128" + QUICK]
    assert (
        data["cuda_resnet101_b8_512_amp"] == {"rows": ["kept"]}
        and data["cpu_resnet18_b2_128" + QUICK]["rows"] == []
    )


@pytest.mark.examples
def test_bench_joint_amp_ignored_on_the_cpu_is_not_in_the_entrys_key(tmp_path, monkeypatch):
    """``--amp`` on the CPU is ignored (as in the training CLI): the run's entry is the CPU entry without
    ``_amp``, replacing an earlier run's, not a second entry beside it."""
    bench = _import("bench_joint")
    out = tmp_path / "joint.json"
    out.write_text(json.dumps({"cpu_resnet18_b2_128" + QUICK: {"rows": ["earlier"]}}))
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [])
    bench.main(["--no-breakdown", "--threads", "1", "--variants", "deeplab", "--amp", "--out", str(out)])
    data = json.loads(out.read_text())
    assert list(data) == ["cpu_resnet18_b2_128" + QUICK] and data["cpu_resnet18_b2_128" + QUICK]["rows"] == []


@pytest.mark.examples
def test_bench_joint_fusion_hidden_sets_the_stacks_widths_and_its_own_entry(tmp_path, monkeypatch):
    """``--fusion-hidden`` builds the stack of those logical widths (doubled by the ReLU), records them in the
    entry's config and writes the entry beside the default widths' one (``..._fusion64``), not over it. The
    default is the training CLI's, so that the main table measures the CLI's model."""
    bench = _import("bench_joint")
    from examples.voc_joint import train_options

    default = bench.build_parser().parse_args([]).fusion_hidden
    assert default == train_options.build_parser().parse_args([]).fusion_hidden == [64, 64]
    args = bench.build_parser().parse_args(["--size", "16", "--fusion-hidden", "64"])
    args.channels_last = False
    model = bench.build_model("joint_hard_ti", args, torch.device("cpu"), bench.default_options(args))
    assert [tuple(c.weight.shape[:2]) for c in model.fusion.convs] == [(128, 42), (21, 128)]
    out = tmp_path / "joint.json"
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [])
    for widths in (["64", "64"], ["64"], ["42", "42"]):
        argv = ["--no-breakdown", "--threads", "1", "--variants", "deeplab", "--fusion-hidden", *widths]
        bench.main([*argv, "--out", str(out)])
    data = json.loads(out.read_text())
    assert list(data) == [
        "cpu_resnet18_b2_128" + QUICK,
        "cpu_resnet18_b2_128_fusion64" + QUICK,
        "cpu_resnet18_b2_128_fusion42-42" + QUICK,
    ]
    assert [e["config"]["fusion_hidden"] for e in data.values()] == [[64, 64], [64], [42, 42]]


@pytest.mark.examples
@pytest.mark.parametrize(
    ("widths", "said"),
    [
        (
            ["40", "64"],
            "--fusion-hidden 40 64: every hidden width of a transparent stack must be at least its input "
            "width, the 42 channels of [S, U(S)] (2 x 21 classes), got 40",
        ),
        (["64"] * 17, "--fusion-hidden must be a list of 1 to 16 ints in [1, 65536], each two consecutive "),
        (["8192"] * 5, "--fusion-hidden 8192 8192 8192 8192 8192 makes 268951552 fusion weights with 21 "),
        (["0"], "argument --fusion-hidden: must be an integer in [1, 65536], got 0"),
    ],
)
def test_bench_joint_refuses_fusion_widths_the_stack_cannot_have(widths, said, tmp_path, monkeypatch, capsys):
    """Widths below the stack's input (2 x 21 channels), too many layers, too many weights or a width of 0 are
    refused before the run (exit status 2), naming the option, the bound and the value."""
    bench = _import("bench_joint")

    def not_run(*rest):
        raise AssertionError("the run started")

    monkeypatch.setattr(bench, "measure_pair_set", not_run)
    with pytest.raises(SystemExit) as exc:
        bench.main(["--fusion-hidden", *widths, "--out", str(tmp_path / "j.json")])
    assert exc.value.code == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "j.json").exists()


@pytest.mark.examples
@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            '<<<<<<< HEAD\n{"cuda_resnet101_b8_512_amp": {"rows": ["kept"]}}\n=======\n>>>>>>> b\n',
            "holds no JSON",
        ),
        ('[{"cuda_resnet101_b8_512_amp": {"rows": ["kept"]}}]\n', "holds a JSON list, not an object"),
        (b"\xff\xfe{}", "cannot be read"),
    ],
)
def test_bench_joint_refuses_an_output_file_it_cannot_keep_the_entries_of(
    text, said, tmp_path, monkeypatch, capsys
):
    """A joint.json that held no JSON object (a merge conflict, a hand edit) was read as no entries after the
    whole run, and the run's entry replaced every other one (the only CUDA result among them): refused before
    the run now, naming the file; the file is left as it was. An empty file still means no entries."""
    bench = _import("bench_joint")
    out = tmp_path / "joint.json"
    out.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = out.read_bytes()

    def not_run(*rest):
        raise AssertionError("the run started")

    monkeypatch.setattr(bench, "measure_pair_set", not_run)
    with pytest.raises(SystemExit) as exc:
        bench.main(["--no-breakdown", "--threads", "1", "--variants", "deeplab", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} {said}" in err and "drop the entries of the other runs" in err
    assert out.read_bytes() == before
    out.write_text("\n")
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [])
    bench.main(["--no-breakdown", "--threads", "1", "--variants", "deeplab", "--out", str(out)])
    assert list(json.loads(out.read_text())) == ["cpu_resnet18_b2_128" + QUICK]


def test_bench_uniformize_paired_ratio_is_the_median_of_pair_ratios(monkeypatch):
    """scatter's "paired x floor": the median of op / floor over alternating pairs, not a median ratio."""
    bench = _import("bench_uniformize")
    floor, op = iter([1.0, 2.0, 4.0]), iter([3.0, 2.0, 12.0])

    def time_ms(fn, n, warmup=1, device="cpu"):
        if warmup == 0 and fn.__name__ in ("floor_fb", "fwd_bwd"):
            return [next(floor if fn.__name__ == "floor_fb" else op)]
        return [1.0] * n

    monkeypatch.setattr(bench, "time_ms", time_ms)
    cfg = {"B": 1, "C": 2, "H": 8, "W": 8, "N_s": 4, "labels": "grid", "threads": 1}
    res = bench.run_one(cfg, "scatter", "cpu", 3, dense_max_gb=1.0, fresh_process=False)
    assert res["paired_ratios"] == [3.0, 1.0, 3.0] and res["paired_floor_ms"] == 2.0
    assert res["paired_x_floor"] == 3.0 and res["max_abs_err"] < 1e-5


def test_bench_uniformize_sweep_medians_without_the_warm_up_round(monkeypatch):
    """Per configuration: floor and op medians of the timed rounds (round 0 warms up), x floor the median of
    the round ratios, and max / min over the grid configurations only."""
    bench = _import("bench_uniformize")
    per_round = {  # (floor, op) of the three configurations; round 0 is the warm-up
        0: [(100, 100), (100, 100), (100, 100)],
        1: [(1, 2), (1, 3), (1, 40)],
        2: [(2, 2), (2, 4), (2, 40)],
        3: [(4, 12), (4, 5), (4, 40)],
    }
    times = iter(t for r in range(4) for pair in per_round[r] for t in pair)
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [float(next(times))])
    cfgs = [
        {"B": 1, "C": 2, "H": 8, "W": 8, "N_s": n, "labels": labels, "threads": 1}
        for n, labels in ((4, "grid"), (16, "grid"), (4, "voronoi"))
    ]
    sweep = bench.run_sweep(cfgs, "cpu", 3)
    rows = sweep["rows"]
    assert [(r["floor_fwd_bwd_ms"], r["fwd_bwd_ms"]) for r in rows] == [(2.0, 2.0), (2.0, 4.0), (2.0, 40.0)]
    assert rows[0]["x_floor"] == 2.0  # round ratios 2, 1, 3 (the ratio of the medians would be 1)
    assert sweep["grid_max_over_min"] == 2.0  # 4 / 2: the Voronoi configuration does not count


def test_bench_uniformize_table_ratios(monkeypatch):
    """x floor and x copy from fwd+bwd times; paper/this from setup + fwd+bwd of both."""
    bench = _import("bench_uniformize")
    measured = {
        "floor": {"setup_ms": 0.0, "fwd_ms": 0.5, "fwd_bwd_ms": 1.0, "peak_extra_mb": None},
        "copy": {"setup_ms": 0.0, "fwd_ms": 0.2, "fwd_bwd_ms": 0.5, "peak_extra_mb": None},
        "scatter": {"setup_ms": 1.0, "fwd_ms": 1.0, "fwd_bwd_ms": 3.0, "peak_extra_mb": None},
        "paper_coo": {"setup_ms": 2.0, "fwd_ms": 4.0, "fwd_bwd_ms": 10.0, "peak_extra_mb": None},
    }
    monkeypatch.setattr(bench, "_measure", lambda args, cfg, variant: dict(measured[variant]))
    argv = ["--quick", "--in-process", "--threads", "1", "--no-voronoi", "--num-superpixels", "64"]
    data = bench.main([*argv, "--variants", "floor,copy,scatter,paper_coo", "--no-sweep"])
    (config,) = data["configs"]
    scatter = config["results"]["scatter"]
    assert scatter["x_floor"] == 3.0 and scatter["x_copy"] == 6.0 and scatter["paper_over_this"] == 3.0


def test_paired_times_alternate_which_runs_first():
    """One timed run of each per round, the order swapped every round; the lists pair round by round."""
    harness = _import("_harness")
    calls: list[str] = []
    a, b = harness.paired_times(lambda: calls.append("a"), lambda: calls.append("b"), 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(a) == len(b) == 4 and all(t >= 0 for t in a + b)


def test_paired_times_file_each_time_under_its_own_function(monkeypatch):
    """Whichever runs first in a round, ``first``'s time goes to the first list, ``second``'s to the other."""
    harness = _import("_harness")
    monkeypatch.setattr(harness, "time_ms", lambda fn, n, warmup=1, device="cpu": [fn()])
    a, b = harness.paired_times(lambda: 1.0, lambda: 3.0, 5)
    assert a == [1.0] * 5 and b == [3.0] * 5


def test_time_ms_on_the_cpu_is_milliseconds_of_each_timed_run(monkeypatch):
    """On the CPU, ``time_ms`` gives ``time.perf_counter``'s seconds of each timed run in milliseconds (the
    unit every script's ``*_ms`` field and table is labelled with), after untimed warm-up runs."""
    from types import SimpleNamespace

    harness = _import("_harness")
    clock = {"s": 0.0, "runs": 0}

    def run() -> None:
        clock["runs"] += 1
        clock["s"] += 0.002 * clock["runs"]  # 2 ms, 4 ms, ...

    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=lambda: clock["s"]))
    times = harness.time_ms(run, 3, warmup=2)
    assert times == pytest.approx([6.0, 8.0, 10.0]) and clock["runs"] == 5


def test_bench_uniformize_paired_rounds_alternate_after_a_warm_floor(monkeypatch):
    """scatter's paired rounds: one untimed floor run first, then floor and op in alternating order."""
    bench = _import("bench_uniformize")
    order: list[str] = []
    backwards: list[int] = []
    backward = torch.Tensor.backward

    def counted(self, *args, **kwargs):
        backwards.append(1)
        return backward(self, *args, **kwargs)

    def time_ms(fn, n, warmup=1, device="cpu"):  # records the paired rounds' calls, runs nothing
        if warmup == 0:
            order.append(fn.__name__)
        return [1.0] * n

    monkeypatch.setattr(bench, "time_ms", time_ms)
    monkeypatch.setattr(torch.Tensor, "backward", counted)
    monkeypatch.setitem(sys.modules[bench.PeakMemory.__module__]._PRIMED, "autograd", True)  # (primed)
    cfg = {"B": 1, "C": 2, "H": 8, "W": 8, "N_s": 4, "labels": "grid", "threads": 1}
    bench.run_one(cfg, "scatter", "cpu", 4, dense_max_gb=1.0, fresh_process=False)
    assert order == ["floor_fb", "fwd_bwd", "fwd_bwd", "floor_fb"] * 2
    # the run of the tensor peak, the floor's warm-up run and the check of the gradient against float64 (the
    # timed runs are faked)
    assert len(backwards) == 3


def test_bench_uniformize_error_check_sees_a_wrong_result(monkeypatch):
    """max_abs_err compares the variant's float32 output with the float64 reference: a wrong op shows."""
    bench = _import("bench_uniformize")
    from sparse_ops import SuperpixelAssignment

    uniformize = SuperpixelAssignment.uniformize

    def off_in_float32(self, x):  # the timed (float32) path is wrong, the float64 reference is not
        return uniformize(self, x) * (1.5 if x.dtype == torch.float32 else 1.0)

    monkeypatch.setattr(SuperpixelAssignment, "uniformize", off_in_float32)
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    cfg = {"B": 1, "C": 2, "H": 8, "W": 8, "N_s": 4, "labels": "grid", "threads": 1}
    res = bench.run_one(cfg, "scatter", "cpu", 1, dense_max_gb=1.0, paired=False, fresh_process=False)
    assert res["max_abs_err"] > 1e-3


def test_bench_uniformize_error_check_sees_a_wrong_gradient(monkeypatch):
    """The check compared only the forward with float64: a variant whose backward is wrong passed (its
    max err was the forward's). ``max_abs_err_grad`` compares the input gradient with float64 too, and the
    table's max err is the larger of the two."""
    bench = _import("bench_uniformize")
    from sparse_ops import SuperpixelAssignment

    uniformize = SuperpixelAssignment.uniformize

    class HalfGradient(torch.autograd.Function):  # the identity forward, half the gradient
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 0.5

    def wrong_backward(self, x):  # the timed (float32) path's backward is wrong, its forward right
        y = uniformize(self, x)
        return HalfGradient.apply(y) if x.dtype == torch.float32 else y

    monkeypatch.setattr(SuperpixelAssignment, "uniformize", wrong_backward)
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    cfg = {"B": 1, "C": 2, "H": 8, "W": 8, "N_s": 4, "labels": "grid", "threads": 1}
    res = bench.run_one(cfg, "scatter", "cpu", 1, dense_max_gb=1.0, paired=False, fresh_process=False)
    assert res["max_abs_err"] < 1e-6 and res["max_abs_err_grad"] > 1e-2
    assert bench.worst_error(res) == res["max_abs_err_grad"]
    assert bench.worst_error({"max_abs_err": 0.0, "max_abs_err_grad": float("nan")}) != 0.0
    assert bench.worst_error({"fwd_ms": 1.0}) is None


def test_bench_uniformize_a_variant_with_a_wrong_result_ends_the_run(monkeypatch, capsys, tmp_path):
    """A variant whose max err against the float64 reference is above the tolerance (or NaN) is named and the
    run ends with an error, after writing its table: before, the error was only printed beside its times, and
    the run passed as a result."""
    bench = _import("bench_uniformize")
    measured = {
        "floor": {"setup_ms": 0.0, "fwd_ms": 0.5, "fwd_bwd_ms": 1.0, "peak_extra_mb": None},
        "scatter": {
            "setup_ms": 1.0,
            "fwd_ms": 1.0,
            "fwd_bwd_ms": 3.0,
            "peak_extra_mb": None,
            "max_abs_err": 2e-7,
        },
        "sparse": {
            "setup_ms": 1.0,
            "fwd_ms": 0.1,
            "fwd_bwd_ms": 0.2,
            "peak_extra_mb": None,
            "max_abs_err": 0.5,
        },
        "paper_coo": {
            "setup_ms": 0.0,
            "fwd_ms": 0.1,
            "fwd_bwd_ms": 0.2,
            "peak_extra_mb": None,
            "max_abs_err": float("nan"),
        },
    }
    monkeypatch.setattr(bench, "_measure", lambda args, cfg, variant: dict(measured[variant]))
    out = tmp_path / "u.json"
    argv = [
        "--quick",
        "--in-process",
        "--threads",
        "1",
        "--no-voronoi",
        "--num-superpixels",
        "64",
        "--no-sweep",
    ]
    with pytest.raises(SystemExit, match="a wrong result") as exc:
        bench.main([*argv, "--variants", "floor,scatter,sparse,paper_coo", "--out", str(out)])
    message = str(exc.value.code)
    assert "sparse at B1_C21_128x128_Ns64_grid (max err 5.0e-01)" in message and "paper_coo at" in message
    assert "scatter at" not in message and "WRONG" in capsys.readouterr().out
    assert json.loads(out.read_text())["configs"][0]["results"]["sparse"]["max_abs_err"] == 0.5
    measured["sparse"]["max_abs_err"] = measured["paper_coo"]["max_abs_err"] = 1e-6
    bench.main([*argv, "--variants", "floor,scatter,sparse,paper_coo"])  # within the tolerance: no error


@pytest.mark.examples
def test_bench_joint_breakdown_shares_sum_and_deeplab_step(tmp_path, monkeypatch, capsys):
    """The breakdown's JSON keeps the parts, their sum and DeepLabV3+'s step of the main table; the printed
    shares are per cent of the sum of the parts."""
    bench = _import("bench_joint")

    def row(variant: str, median_s: float, ratio: float) -> dict:
        return {
            "variant": variant,
            "median_s": median_s,
            "time_ratio": ratio,
            "time_ratio_paired": ratio,
            "memory_ratio": 1.0,
            "memory_bytes": {"saved_activations": 2**20},
        }

    parts = {
        "DeepLabV3+": {"median_s": 0.3, "saved_bytes": 10},
        "fusion": {"median_s": 0.1, "saved_bytes": 5},
    }
    rows = [row("deeplab", 0.2, 1.0), row("joint_hard_noti", 0.25, 1.25), row("joint_hard_ti", 0.3, 1.5)]
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: rows)
    monkeypatch.setattr(bench, "build_model", lambda *rest: None)  # the model of the breakdown and the floor
    monkeypatch.setattr(bench, "breakdown", lambda *rest: parts)
    floor = {"flops": 4e9, "gflops": 40.0, "matmul_shape": [8192, 128, 128], "matmul_gflops": 100.0}
    floor |= {"conv_shape": [1, 128, 64, 128], "conv_gflops": 80.0, "floor_s": 0.04}
    monkeypatch.setattr(bench, "fusion_floor", lambda *rest: dict(floor))
    argv = ["--threads", "1", "--variants", "deeplab", "joint_hard_ti", "--out", str(tmp_path / "j.json")]
    result = bench.main(argv)
    assert result["breakdown"] == {
        "parts": parts,
        "sum_of_parts_s": pytest.approx(0.4),
        "deeplab_step_s": 0.2,
        # joint_hard_noti's step + the fusion's products at torch.mm's rate, over DeepLabV3+'s
        "fusion_floor": {**floor, "step_ratio_floor": pytest.approx((0.25 + 0.04) / 0.2)},
    }
    printed = capsys.readouterr().out
    assert "75.0%" in printed and "25.0%" in printed
    assert "4.00 GFLOP" in printed and "1.45x deeplab (joint_hard_ti measured 1.50x)" in printed


@pytest.mark.examples
@pytest.mark.parametrize("products", ["auto", "mm"])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("uniformized", [False, True])
def test_bench_joint_fusion_flops_match_the_products_run(recompute, products, uniformized):
    """``fusion_flops`` counts what the fused stack's forward and backward multiply: torch's FLOP counter over
    one step of the stack, as the CPU runs it in float32 (oneDNN convolutions) and as matrix products (their
    in-place ``addmm_`` counted too, which the counter leaves out by default); and with the hard
    uniformization folded in (``uniformize``: the last layer once per superpixel where the products are
    oneDNN convolutions, the stack per pixel otherwise)."""
    from types import SimpleNamespace

    from torch.utils.flop_counter import FlopCounterMode

    import sparse_ops
    from examples.voc_joint.models.joint import FusionStack

    bench = _import("bench_joint")
    fusion = FusionStack(3, [6, 7], "relu", "transparent")  # widths 6 -> 12 -> 14 -> 3
    fusion._products = products
    model = SimpleNamespace(fusion=fusion, recompute_fusion=recompute)
    s, u = (torch.randn(2, 3, 4, 6, requires_grad=True) for _ in range(2))
    ids = torch.arange(24).view(4, 6).div(5, rounding_mode="floor").expand(2, 4, 6)  # 5 superpixels an image
    kwargs = {"uniformize": (ids, sparse_ops.SuperpixelAssignment(ids, 5))} if uniformized else {}

    def addmm_(self_shape, a, b, *rest, out_shape=None, **kwargs):  # written out, not the script's
        return 2 * a[0] * a[1] * b[1]

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
        fusion(s, u, recompute=recompute, **kwargs).sum().backward()
    flops = bench.fusion_flops(model, 2 * 4 * 6, torch.device("cpu"), 2 * 5 if uniformized else None)
    assert flops == counter.get_total_flops() > 0
    # the last layer (14 -> 3) on 10 superpixels instead of 48 pixels, and not recomputed
    folded = uniformized and products == "auto"
    per_pixel_form = FusionStack(3, [6, 7], "relu", "transparent")
    per_pixel_form._products = "mm"
    per_pixel = SimpleNamespace(fusion=per_pixel_form, recompute_fusion=recompute)
    assert (flops < bench.fusion_flops(per_pixel, 2 * 4 * 6, torch.device("cpu"), 2 * 5)) == folded


@pytest.mark.examples
@pytest.mark.parametrize("products", ["auto", "mm"])
def test_bench_joint_step_flops_differ_by_the_fusion_stack(products):
    """Two independent counts agree: the joint step with the fusion stack minus the one without it is the
    fusion's arithmetic by ``fusion_flops``, with the stack's products as the CPU runs them in float32 and as
    matrix products (whose in-place ``addmm_`` the script counts); nothing is counted under ``--compile``."""
    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(["--threads", "1", "--size", "16"])
    args.channels_last = False
    opts = {**bench.default_options(args), "products": products}
    cpu = torch.device("cpu")
    (model, with_step), (_, without_step) = (
        bench.make_step(v, args, cpu, opts) for v in ("joint_hard_ti", "joint_hard_noti")
    )
    with_stack, without = bench.step_flops(with_step, opts), bench.step_flops(without_step, opts)
    superpixels = args.batch_size * bench.num_grid_cells(16, 16, args.cell_size)
    assert with_stack - without == bench.fusion_flops(model, args.batch_size * 16 * 16, cpu, superpixels) > 0
    assert bench.step_flops(with_step, {**opts, "compile": True}) is None


@pytest.mark.examples
def test_bench_joint_builds_one_model_for_the_breakdown_and_the_fusion_floor(tmp_path, monkeypatch):
    """``fusion_floor`` built the joint model once more per run only to read the stack's layer shapes: it
    reads them from the breakdown's model now, with the same figures as from a model of its own."""
    bench = _import("bench_joint")
    built: list[str] = []
    build = bench.build_model

    def counted(variant, *rest):
        built.append(variant)
        return build(variant, *rest)

    def fake_times(steps, *rest):
        return {k: {"median_s": 0.5 if k == "conv" else 0.25} for k in steps}

    row = {"variant": "deeplab", "median_s": 0.2, "time_ratio": 1.0, "time_ratio_paired": 1.0}
    row |= {"memory_ratio": 1.0, "memory_bytes": {"saved_activations": 2**20}}
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [row])
    monkeypatch.setattr(bench, "build_model", counted)
    monkeypatch.setattr(bench, "time_steps", fake_times)
    argv = ["--threads", "1", "--size", "16", "--rounds", "1", "--variants", "deeplab"]
    result = bench.main([*argv, "--out", str(tmp_path / "j.json")])
    assert built == ["joint_hard_ti"]
    args = bench.build_parser().parse_args(argv)
    args.channels_last = bench.DEFAULT_CHANNELS_LAST.get("cpu", False)  # as main sets it
    own = build(  # the model fusion_floor built for itself
        "joint_hard_ti", args, torch.device("cpu"), bench.default_options(args)
    )
    floor = bench.fusion_floor(
        args, torch.device("cpu"), own, result["breakdown"]["parts"]["fusion"]["median_s"]
    )
    assert result["breakdown"]["fusion_floor"] == {**floor, "step_ratio_floor": None}


@pytest.mark.examples
def test_bench_joint_breakdown_loss_part_runs_no_uniformization(monkeypatch):
    """The loss part times (and counts the saved bytes of) cross-entropy + ``spixel_loss`` on the final
    logits made beforehand: it made them in its timed runs, one more uniformization of the fusion's output,
    with a graph (its time and saved bytes charged to the loss)."""
    import sparse_ops

    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(["--threads", "1", "--size", "16", "--rounds", "1"])
    args.channels_last = bench.DEFAULT_CHANNELS_LAST.get("cpu", False)  # as main sets it
    opts = bench.default_options(args)
    model = bench.build_model("joint_hard_ti", args, torch.device("cpu"), opts)
    calls = {"n": 0}
    uniformize = sparse_ops.SuperpixelAssignment.uniformize

    def counted(self, *rest, **kw):
        calls["n"] += 1
        return uniformize(self, *rest, **kw)

    per_part: dict[str, int] = {}

    def fake_times(steps, *rest):
        for name, run in steps.items():
            calls["n"] = 0
            run()
            per_part[name] = calls["n"]
        return {k: {"median_s": 1.0} for k in steps}

    monkeypatch.setattr(sparse_ops.SuperpixelAssignment, "uniformize", counted)
    monkeypatch.setattr(bench, "time_steps", fake_times)
    parts = bench.breakdown(args, torch.device("cpu"), opts, model)
    assert list(per_part) == list(parts) == list(bench.BREAKDOWN_PARTS)
    assert per_part["loss"] == 0


@pytest.mark.examples
def test_bench_joint_fusion_floor_is_the_flops_at_the_matmul_rate(monkeypatch):
    """The floor is the fusion's FLOPs at the faster of the timed ``torch.mm`` and 1x1 convolution (one CPU
    chunk of rows, at most one image's, by the widest hidden layer); the fusion's own rate is its FLOPs over
    its measured time."""
    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(["--threads", "1", "--size", "16", "--rounds", "1"])
    args.channels_last = False
    pixels, image = args.batch_size * 16 * 16, 16 * 16
    bare = bench.build_model("joint_hard_ti", args, torch.device("cpu"), {})
    superpixels = args.batch_size * bench.num_grid_cells(16, 16, args.cell_size)
    flops = bench.fusion_flops(bare, pixels, torch.device("cpu"), superpixels)
    for mm_s, conv_s in ((0.5, 0.25), (0.25, 0.5)):  # the floor takes the faster of the two rates
        times = {"mm": {"median_s": mm_s}, "conv": {"median_s": conv_s}}
        monkeypatch.setattr(
            bench, "time_steps", lambda steps, *rest, times=times: {k: times[k] for k in steps}
        )
        model = bench.build_model("joint_hard_ti", args, torch.device("cpu"), bench.default_options(args))
        floor = bench.fusion_floor(args, torch.device("cpu"), model, 2.0)
        # an image has fewer pixels than a CPU chunk: all of one image's (a chunk never spans two images)
        assert floor["matmul_shape"] == [image, 128, 128]
        assert floor["conv_shape"] == [1, 128, 16, 16]  # the same pixels as whole image rows
        assert floor["matmul_gflops"] == pytest.approx(2 * image * 128 * 128 / mm_s / 1e9)
        assert floor["conv_gflops"] == pytest.approx(2 * image * 128 * 128 / conv_s / 1e9)
        assert floor["flops"] > flops  # the CLI default recomputes, the bare model does not
        assert floor["gflops"] == pytest.approx(floor["flops"] / 2.0 / 1e9)
        assert floor["floor_s"] == pytest.approx(floor["flops"] / (2 * image * 128 * 128 / 0.25))


@pytest.mark.examples
@pytest.mark.parametrize(
    ("size", "chunk", "rows", "image_rows"),
    [(96, 8192, 8192, 85), (96, None, 9216, 96), (16, 8, 8, 1)],
)
def test_bench_joint_fusion_floor_times_one_cpu_chunk_as_whole_image_rows(
    size, chunk, rows, image_rows, monkeypatch
):
    """With more pixels than a CPU chunk, ``torch.mm`` times one chunk of rows (8192) and the convolution the
    whole image rows within it (85 rows of 96: 8160 pixels, its rate over those); a chunk never spans two
    images (the default 16384 at 96 px: one image, 9216 pixels in 96 rows, though B=2 has 18432); a chunk
    shorter than an image row still convolves one row."""
    bench = _import("bench_joint")
    argv = ["--threads", "1", "--size", str(size), "--rounds", "1"]
    args = bench.build_parser().parse_args(argv)
    args.channels_last = False
    model = bench.build_model("joint_hard_ti", args, torch.device("cpu"), bench.default_options(args))
    if chunk is not None:
        model.fusion.cpu_chunk_rows = chunk
    times = {"mm": {"median_s": 0.5}, "conv": {"median_s": 0.25}}
    monkeypatch.setattr(bench, "time_steps", lambda steps, *rest: {k: times[k] for k in steps})
    floor = bench.fusion_floor(args, torch.device("cpu"), model, 2.0)
    assert floor["matmul_shape"] == [rows, 128, 128] and floor["conv_shape"] == [1, 128, image_rows, size]
    assert floor["matmul_gflops"] == pytest.approx(2 * rows * 128 * 128 / 0.5 / 1e9)
    assert floor["conv_gflops"] == pytest.approx(2 * image_rows * size * 128 * 128 / 0.25 / 1e9)


@pytest.mark.examples
def test_bench_joint_fusion_floor_of_a_soft_model_counts_its_stack_per_pixel(monkeypatch):
    """The soft joint model's stack does not uniformize its output: its arithmetic is the stack's per pixel,
    not the hard model's with its last layer per superpixel."""
    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(["--threads", "1", "--size", "16", "--rounds", "1"])
    args.channels_last = False
    cpu = torch.device("cpu")
    model = bench.build_model("joint_soft_ti", args, cpu, bench.default_options(args))
    monkeypatch.setattr(bench, "time_steps", lambda steps, *rest: {k: {"median_s": 0.5} for k in steps})
    floor = bench.fusion_floor(args, cpu, model, 2.0)
    assert floor["flops"] == bench.fusion_flops(model, args.batch_size * 16 * 16, cpu, None)
    superpixels = args.batch_size * bench.num_grid_cells(16, 16, args.cell_size)
    assert floor["flops"] != bench.fusion_flops(model, args.batch_size * 16 * 16, cpu, superpixels)


def test_bench_ops_check_refuses_a_wrong_gradient(monkeypatch):
    """The float64 check compares the gradient too: an alternative with the right values and a doubled
    gradient is refused."""
    import dataclasses

    bench = _import("bench_ops")
    case = bench.CASES["pool_sum"]

    def doubled_gradient(inp):
        x = inp["x"]
        return bench.scatter_pool(2 * x - x.detach(), inp["sp"], inp["n"], "sum")  # values of x, grad 2

    monkeypatch.setitem(bench.CASES, "pool_sum", dataclasses.replace(case, alt=doubled_gradient))
    check = bench.check_case("pool_sum", bench.case_config("pool_sum", quick=True))
    assert check["passed"] is False and check["max_rel_diff"] == pytest.approx(0.5)  # |1 - 2| / 2


def test_bench_ops_check_refuses_a_nan_gradient(monkeypatch):
    """A NaN in any output or gradient fails the float64 check: before, the largest difference was taken
    with Python's ``max``, which keeps the exact outputs' 0 before a NaN gradient: the op passed (timed)."""
    import dataclasses

    bench = _import("bench_ops")
    case = bench.CASES["pool_sum"]

    def nan_gradient(inp):
        x = inp["x"].clone()
        x.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        return bench.scatter_pool(x, inp["sp"], inp["n"], "sum")  # the right values, a NaN gradient

    monkeypatch.setitem(bench.CASES, "pool_sum", dataclasses.replace(case, alt=nan_gradient))
    check = bench.check_case("pool_sum", bench.case_config("pool_sum", quick=True))
    assert check["passed"] is False and check["max_rel_diff"] != check["max_rel_diff"]  # NaN


def test_bench_ops_float_check_runs_in_float64(monkeypatch):
    """Float ops are checked on float64 inputs (integer ops on the float32 inputs that are timed)."""
    import dataclasses

    bench = _import("bench_ops")
    dtypes: list[torch.dtype] = []
    for name in ("pool_mean", "relabel_contiguous"):
        case = bench.CASES[name]

        def inputs(cfg, device, dtype, make=case.inputs):
            dtypes.append(dtype)
            return make(cfg, device, dtype)

        monkeypatch.setitem(bench.CASES, name, dataclasses.replace(case, inputs=inputs))
        check = bench.check_case(name, bench.case_config(name, quick=True))
        assert check["passed"] is True, (name, check)
    assert dtypes == [torch.float64, torch.float32]


def test_bench_ops_worker_times_each_implementation_and_pairs_ours_over_the_alternative(monkeypatch):
    """Each row times its own implementation; the paired ratio is ours / alternative, median over rounds."""
    bench = _import("bench_ops")
    monkeypatch.setattr(
        bench, "make_step", lambda case, fn, inp: (lambda: "ours") if fn is case.ours else (lambda: "alt")
    )
    timed = {"ours": [1.0, 2.0, 9.0], "alt": [4.0, 5.0, 6.0]}
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": timed[fn()][:n])

    def paired_times(first, second, rounds, device="cpu"):
        assert (first(), second(), rounds) == ("ours", "alt", 3)
        return [1.0, 3.0, 8.0], [2.0, 2.0, 2.0]

    monkeypatch.setattr(bench, "paired_times", paired_times)
    cfg = bench.case_config("relabel_contiguous", quick=True)
    ours = bench.worker("relabel_contiguous", "ours", cfg, 3, fresh_process=False)
    alt = bench.worker("relabel_contiguous", "alternative", cfg, 3, fresh_process=False)
    assert (ours["median_ms"], alt["median_ms"]) == (2.0, 5.0)
    assert ours["paired_ratios"] == [0.5, 1.5, 4.0] and ours["paired_ratio_to_alternative"] == 1.5
    assert "paired_ratios" not in alt


def test_bench_ops_main_ratio_is_ours_over_the_alternative(monkeypatch):
    bench = _import("bench_ops")
    rows = {
        "ours": {
            "impl": "ours",
            "median_ms": 2.0,
            "paired_ratio_to_alternative": 0.4,
            "paired_ratios": [0.4],
        },
        "alternative": {"impl": "alternative", "median_ms": 8.0},
    }
    monkeypatch.setattr(bench, "_run_worker", lambda args, name, impl, cfg, repeats: dict(rows[impl]))
    data = bench.main(["--quick", "--threads", "1", "--ops", "relabel_contiguous"])
    entry = data["ops"]["relabel_contiguous"]
    assert entry["ratio_to_alternative"] == 0.25 and entry["paired_ratio_to_alternative"] == 0.4


def test_bench_ops_does_not_time_an_op_whose_check_failed(monkeypatch):
    import dataclasses

    bench = _import("bench_ops")
    case = bench.CASES["relabel_contiguous"]

    def off_by_one(inp):
        ids, counts = case.alt(inp)
        return ids + 1, counts

    def timed(*args):
        raise AssertionError("an op whose check failed was timed")

    monkeypatch.setitem(bench.CASES, "relabel_contiguous", dataclasses.replace(case, alt=off_by_one))
    monkeypatch.setattr(bench, "_run_worker", timed)
    with pytest.raises(SystemExit, match="a check failed"):
        bench.main(["--quick", "--threads", "1", "--ops", "relabel_contiguous"])


def _assert_stops_before_timing(bench_soft, monkeypatch, why: str, match: str) -> None:
    """``bench_soft.py --quick`` ends with ``SystemExit`` matching ``match`` before any worker is timed (a
    timed worker fails with ``why``)."""

    def timed(*args):
        raise AssertionError(why)

    monkeypatch.setattr(bench_soft, "_run_worker", timed)
    with pytest.raises(SystemExit, match=match):
        bench_soft.main(["--quick", "--in-process", "--threads", "1"])


def test_bench_soft_refuses_an_implementation_that_disagrees(monkeypatch):
    """The agreement check covers all three implementations, and a disagreement stops the run before any
    timing."""
    bench_soft = _import("bench_soft")
    scatter = bench_soft.scatter_uniformize
    monkeypatch.setitem(bench_soft.SOFT_IMPLS, "scatter", lambda x, a, s: 1.001 * scatter(x, a, s))
    assert bench_soft.check_agreement() > 1e-4
    _assert_stops_before_timing(
        bench_soft, monkeypatch, "timed although the implementations disagree", "disagree"
    )


def test_bench_soft_refuses_an_implementation_with_a_wrong_gradient(monkeypatch):
    """The agreement check compares the gradients w.r.t. the features and the association too (forward and
    backward are timed): an implementation with the right values and a doubled association gradient is
    refused before any timing (before, only the outputs were compared, and it was timed)."""
    bench_soft = _import("bench_soft")
    scatter = bench_soft.scatter_uniformize
    monkeypatch.setitem(bench_soft.SOFT_IMPLS, "scatter", lambda x, a, s: scatter(x, 2 * a - a.detach(), s))
    assert bench_soft.check_agreement() > 1e-4
    _assert_stops_before_timing(bench_soft, monkeypatch, "timed although a gradient disagrees", "disagree")


def test_bench_soft_refuses_an_implementation_with_a_nan(monkeypatch):
    """A NaN in any implementation's output stops the run: before, the largest difference was taken with
    Python's ``max``, which keeps the block implementation's 0.0 against itself before a NaN."""
    bench_soft = _import("bench_soft")
    nine_shift = bench_soft.nine_shift_uniformize

    def one_nan(x, a, s):
        out = nine_shift(x, a, s).clone()
        out[0, 0, 0, 0] = float("nan")
        return out

    monkeypatch.setitem(bench_soft.SOFT_IMPLS, "nine_shift", one_nan)
    assert bench_soft.check_agreement() != bench_soft.check_agreement()  # NaN
    _assert_stops_before_timing(
        bench_soft, monkeypatch, "timed although an implementation gives NaN", "disagree"
    )


def test_bench_soft_refuses_a_segnet_unpooling_that_disagrees(monkeypatch):
    """``max_unpool2d`` and ``nn.MaxUnpool2d`` are checked to give the same output and gradient before any
    timing: before, the two were timed against each other unchecked, and a wrong unpooling was reported."""
    bench_soft = _import("bench_soft")
    assert bench_soft.check_unpool_agreement() is True
    unpool = bench_soft.max_unpool2d
    monkeypatch.setattr(bench_soft, "max_unpool2d", lambda v, i, size: unpool(v, i, size).roll(1, -1))
    assert bench_soft.check_unpool_agreement() is False
    _assert_stops_before_timing(
        bench_soft,
        monkeypatch,
        "timed although the unpoolings disagree",
        r"max_unpool2d and nn\.MaxUnpool2d disagree",
    )


def test_bench_soft_a_failed_worker_names_its_error():
    """A worker subprocess that failed ended the run in a ``CalledProcessError`` without the worker's stderr
    (its error, e.g. CUDA out of memory, was captured and dropped): now the run stops naming the worker, its
    exit status and the last line of its error."""
    bench_soft = _import("bench_soft")
    args = argparse.Namespace(in_process=False, device="cpu", threads=1)
    with pytest.raises(SystemExit) as exc:
        bench_soft._run_worker(args, ["soft", "no_such_impl", 1, 2, 16, 16, 8, 1])
    message = str(exc.value.code)
    assert "worker soft no_such_impl 1 2 16 16 8 1 failed (exit status 1)" in message
    assert message.endswith("KeyError: 'no_such_impl'")


def test_bench_soft_ratios_to_block_and_to_nn(monkeypatch):
    """ratio_to_block = impl / block and ratio_to_nn = impl / nn.MaxUnpool2d (medians of the same run); the
    paired SegNet figure is max_unpool2d / nn.MaxUnpool2d, the median of the round ratios."""
    bench_soft = _import("bench_soft")
    soft_ms = {"block": 2.0, "nine_shift": 6.0, "scatter": 5.0}
    unpool_ms = {"max_unpool2d": 1.0, "nn.MaxUnpool2d": 4.0}

    def run_worker(args, params):
        kind, *rest = params
        if kind == "soft":
            return {"impl": rest[0], "C": rest[2], "median_ms": soft_ms[rest[0]]}
        if kind == "unpool":
            return {"impl": rest[0], "C": rest[2], "median_ms": unpool_ms[rest[0]]}
        return bench_soft.worker_unpool_paired(*rest, device=args.device)

    def paired_times(first, second, rounds, device="cpu"):
        assert (first.__name__, second.__name__) == ("ours", "theirs")
        return [1.0, 3.0, 8.0], [2.0, 2.0, 2.0]

    monkeypatch.setattr(bench_soft, "_run_worker", run_worker)
    monkeypatch.setattr(bench_soft, "paired_times", paired_times)
    data = bench_soft.main(["--quick", "--in-process", "--threads", "1"])
    ratios = {(r["impl"], r["C"]): r["ratio_to_block"] for r in data["soft"]["rows"]}
    assert ratios == {(impl, c): soft_ms[impl] / 2.0 for impl in soft_ms for c in (2, 21)}
    assert {r["impl"]: r["ratio_to_nn"] for r in data["segnet_unpool"]["rows"]} == {
        "max_unpool2d": 0.25,
        "nn.MaxUnpool2d": 1.0,
    }
    assert data["segnet_unpool"]["paired_ratio_to_nn"] == 1.5  # round ratios 0.5, 1.5, 4


def test_ab_uniformize_worker_pairs_rounds_in_alternating_order_after_two_warm_up_rounds(monkeypatch):
    """Rounds alternate which of op and floor runs first; the two first rounds warm up; the paired figure is
    the median of op / floor per round."""
    from types import SimpleNamespace

    import sparse_ops

    ab = _import("ab_uniformize")
    # ms in call order: rounds 0-1 warm up, round 2 op then floor, 3 floor then op, 4 op then floor
    durations = iter([100.0, 100.0, 100.0, 100.0, 4.0, 2.0, 1.0, 3.0, 10.0, 2.0])
    clock = {"t": 0.0, "start": True}

    def perf_counter() -> float:
        if not clock["start"]:
            clock["t"] += next(durations) / 1e3
        clock["start"] = not clock["start"]
        return clock["t"]

    monkeypatch.setattr(ab, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the worker puts its checkout first
    root = Path(sparse_ops.__file__).resolve().parents[1]
    argv = ["--previous", str(root), "--size", "8", "--batch-size", "1", "--channels", "2", "--rounds", "3"]
    res = ab.worker(root, 4, ab.build_parser().parse_args([*argv, "--threads", "1"]))
    assert res["floor_ms"] == pytest.approx(2.0) and res["op_ms"] == pytest.approx(4.0)
    assert res["paired_x_floor"] == pytest.approx(3.0)  # round ratios 2, 3, 5


def test_ab_fusion_pairs_rounds_in_alternating_order_after_two_warm_up_rounds(monkeypatch):
    """Rounds alternate which side runs first (previous in even rounds), the warm-up rounds included; the two
    first rounds are not timed; the paired figure is the median of current / previous per round."""
    from types import SimpleNamespace

    ab = _import("ab_fusion")
    clock, calls = {"t": 0.0}, []
    # ms per run in call order: rounds 0-1 warm up, round 2 previous then current, 3 current then previous
    durations = iter([100.0, 100.0, 100.0, 100.0, 4.0, 2.0, 1.0, 3.0, 10.0, 2.0])

    def side(name: str):
        def run() -> None:
            calls.append(name)
            clock["t"] += next(durations) / 1e3

        return run

    monkeypatch.setattr(ab, "time", SimpleNamespace(perf_counter=lambda: clock["t"]))
    res = ab.paired_rounds({"previous": side("previous"), "current": side("current")}, 3)
    assert calls == ["previous", "current", "current", "previous"] * 2 + ["previous", "current"]
    assert res["previous_ms"] == pytest.approx(4.0) and res["current_ms"] == pytest.approx(2.0)
    assert res["paired_ratio"] == pytest.approx(1 / 3)  # round ratios 2 / 4, 1 / 3, 2 / 10 (not 2 / 4)


def test_ab_uniformize_alternates_the_checkouts_across_repeats(tmp_path, monkeypatch):
    """For each (repeat, N_s) the checkout that runs first alternates, repeats included."""
    from types import SimpleNamespace

    ab = _import("ab_uniformize")
    previous = tmp_path / "previous"
    (previous / "sparse_ops").mkdir(parents=True)
    (previous / "sparse_ops" / "__init__.py").write_text("")

    def run(cmd, **kwargs):
        measured = {"floor_ms": 1.0, "op_ms": 2.0, "paired_x_floor": 2.0}
        return SimpleNamespace(returncode=0, stdout=json.dumps(measured) + "\n", stderr="")

    monkeypatch.setattr(ab.subprocess, "run", run)
    argv = ["--previous", str(previous), "--num-superpixels", "4", "16", "--size", "8", "--repeats", "2"]
    data = ab.main(argv)
    assert [(r["repeat"], r["N_s"], r["code"]) for r in data["runs"]] == [
        (0, 4, "previous"),
        (0, 4, "current"),
        (0, 16, "current"),
        (0, 16, "previous"),
        (1, 4, "current"),
        (1, 4, "previous"),
        (1, 16, "previous"),
        (1, 16, "current"),
    ]


def test_ab_uniformize_records_the_load_average_before_the_runs(tmp_path, monkeypatch):
    """``load_average_at_start`` is read before the first worker (it was read after the last one: the 18:11
    A/B recorded 1.21, the load its own runs had made)."""
    from types import SimpleNamespace

    ab = _import("ab_uniformize")
    previous = tmp_path / "previous"
    (previous / "sparse_ops").mkdir(parents=True)
    (previous / "sparse_ops" / "__init__.py").write_text("")
    load = [0.25]

    def run(cmd, **kwargs):
        load[0] = 2.0  # the machine gets busy once a worker has run
        measured = {"floor_ms": 1.0, "op_ms": 2.0, "paired_x_floor": 2.0}
        return SimpleNamespace(returncode=0, stdout=json.dumps(measured) + "\n", stderr="")

    monkeypatch.setattr(ab.subprocess, "run", run)
    monkeypatch.setattr(os, "getloadavg", lambda: (load[0], load[0], load[0]))
    data = ab.main(["--previous", str(previous), "--num-superpixels", "4", "--size", "8", "--repeats", "1"])
    assert data["meta"]["load_average_at_start"] == 0.25


def test_bench_soft_workers_report_the_median_of_their_runs(monkeypatch):
    bench_soft = _import("bench_soft")
    monkeypatch.setattr(bench_soft, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0, 2.0, 9.0][:n])
    soft = bench_soft.worker_soft("block", 1, 2, 16, 16, 4, 3, fresh_process=False)
    unpool = bench_soft.worker_unpool("max_unpool2d", 1, 2, 8, 8, 3, fresh_process=False)
    assert soft["median_ms"] == unpool["median_ms"] == 2.0  # the mean would be 4
    assert soft["times_ms"] == [1.0, 2.0, 9.0] and soft["peak_rss_growth_mib"] is None


@pytest.mark.parametrize(
    "script",
    # bench_joint builds the example's models: it needs the examples extra (torchvision)
    [
        "bench_ops",
        "bench_overhead",
        "bench_soft",
        "bench_uniformize",
        pytest.param("bench_joint", marks=pytest.mark.examples),
    ],
)
def test_every_benchmark_refuses_cuda_without_it_as_a_usage_error(script, monkeypatch, capsys):
    """``--device cuda`` where CUDA is missing: one argparse error naming the option (exit status 2), the same
    in every script (``_harness.cli_device``)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        _import(script).main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "error: --device cuda: CUDA is not available (torch " in capsys.readouterr().err


_SCRIPTS = [
    "bench_ops",
    "bench_overhead",
    "bench_soft",
    "bench_uniformize",
    pytest.param("bench_joint", marks=pytest.mark.examples),
]


@pytest.mark.parametrize("device", ["tpu", "mps", "cpu:1", "", "cuda:x"])
@pytest.mark.parametrize("script", _SCRIPTS)
def test_every_benchmark_refuses_a_device_it_cannot_use_as_a_usage_error(script, device, capsys):
    """A device string torch does not parse (a traceback from ``torch.device`` before), or one these scripts
    do not measure on (``mps``: a traceback at the first tensor): one argparse error, exit status 2."""
    with pytest.raises(SystemExit) as exc:
        _import(script).main(["--device", device])
    assert exc.value.code == 2
    assert f"error: --device must be cpu, cuda or cuda:N, got {device!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        # each of these parsed, then ended in a traceback (bench_soft --quick ignored --repeats)
        ("bench_soft", ["--repeats", "0"], "--repeats must be >= 1, got 0"),
        ("bench_soft", ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        ("bench_soft", ["--threads", "0"], "--threads must be >= 1, got 0"),
        ("bench_transparent_init", ["--seeds", "0"], "--seeds must be >= 1, got 0"),
        ("bench_transparent_init", ["--threads", "-1"], "--threads must be >= 1, got -1"),
        ("bench_uniformize", ["--repeats", "0"], "--repeats must be >= 1, got 0"),
        ("bench_uniformize", ["--dense-max-gb", "nan"], "--dense-max-gb must be >= 0, got nan"),
        ("bench_uniformize", ["--num-superpixels", "64,abc"], "--num-superpixels must be positive integers"),
        ("bench_uniformize", ["--num-superpixels", "64,7", "--quick"], "--num-superpixels must be squares"),
        ("bench_uniformize", ["--quick", "--num-superpixels", "65536"], "squares <= 16384 (grid labels"),
        ("bench_ops", ["--threads", "2147483648"], "--threads must be in [1, 1024], got 2147483648"),
        ("bench_ops", ["--quick", "--ops", "pool_mean,pool_mean"], "--ops lists pool_mean twice"),
        ("bench_uniformize", ["--quick", "--variants", "floor,floor"], "--variants lists floor twice"),
        ("bench_overhead", ["--threads", "100000"], "--threads must be in [1, 1024], got 100000"),
        pytest.param(
            "bench_joint", ["--rounds", "0"], "--rounds must be >= 1, got 0", marks=pytest.mark.examples
        ),
        pytest.param(
            "bench_joint", ["--size", "0"], "--size must be >= 1, got 0", marks=pytest.mark.examples
        ),
        pytest.param("bench_joint", ["--warmup", "-1"], "--warmup must be >= 0", marks=pytest.mark.examples),
        pytest.param(  # one superpixel for the whole image
            "bench_joint",
            ["--cell-size", "200"],
            "--cell-size 200 is larger than --size 128",
            marks=pytest.mark.examples,
        ),
        pytest.param(  # before: SpixelFCN's ValueError (a traceback) after the parse
            "bench_joint",
            ["--size", "4096", "--cell-size", "2048"],
            "--cell-size must be <= 1024 (SpixelFCN's bound), got 2048",
            marks=pytest.mark.examples,
        ),
        pytest.param("bench_joint", ["--threads", "0"], "--threads must be >= 1", marks=pytest.mark.examples),
        pytest.param(  # the script's own reason, not only check_counts' bound
            "bench_joint",
            ["--batch-size", "1"],
            "(the ASPP image-pooling BatchNorm sees one value per channel per image in training mode), got 1",
            marks=pytest.mark.examples,
        ),
        pytest.param(
            "bench_joint", ["--cell-size", "0"], "--cell-size must be >= 1, got 0", marks=pytest.mark.examples
        ),
        pytest.param(
            "bench_joint", ["--backbone", "resnet7"], "--backbone: invalid", marks=pytest.mark.examples
        ),
    ],
)
def test_benchmark_counts_are_checked_before_anything_runs(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _import(script).main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.examples
def test_bench_joint_accepts_the_largest_cell_and_a_cell_as_large_as_the_image(tmp_path):
    """``--cell-size`` up to SpixelFCN's bound (1024) and up to ``--size`` is accepted; one above either is
    refused (``test_benchmark_counts_are_checked_before_anything_runs``)."""
    bench = _import("bench_joint")
    out = ["--out", str(tmp_path / "j.json")]
    for argv in (["--size", "4096", "--cell-size", "1024"], ["--size", "32", "--cell-size", "32"]):
        p = bench.build_parser()
        bench.check_args(p, p.parse_args([*argv, *out]))


@pytest.mark.examples
def test_bench_joint_refuses_the_cpu_clock_on_cuda(tmp_path, monkeypatch, capsys):
    """``--clock cpu`` reads the process's CPU time, which does not see the GPU's work: refused with
    ``--device cuda`` (on a machine that has CUDA), before anything runs."""
    bench = _import("bench_joint")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    p = bench.build_parser()
    args = p.parse_args(["--clock", "cpu", "--device", "cuda", "--out", str(tmp_path / "j.json")])
    with pytest.raises(SystemExit) as exc:
        bench.check_args(p, args)
    assert exc.value.code == 2
    assert (
        "--clock cpu measures CPU time and needs --device cpu, got --device cuda" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("script", "option"),
    [
        ("bench_ops", "--out"),
        ("bench_overhead", "--out"),
        ("bench_soft", "--out"),
        ("bench_transparent_init", "--out"),
        ("bench_uniformize", "--out"),
        pytest.param("bench_joint", "--out", marks=pytest.mark.examples),
    ],
)
def test_a_result_path_that_cannot_be_written_is_refused_before_the_measurements(
    script, option, tmp_path, monkeypatch, capsys
):
    """A folder given as the JSON path failed with IsADirectoryError after the whole run (minutes); a path in
    a folder this user may not write in, with PermissionError."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    deny_writes(monkeypatch, locked)
    denied = "this user may not write in the folder"
    for path, message in (
        (tmp_path, f"{option} must be a file path, got the folder {str(tmp_path)!r}"),
        (blocker / "r.json", f"{option} {str(blocker / 'r.json')!r} lies below the file {str(blocker)!r}"),
        (locked / "r.json", f"{option} {str(locked / 'r.json')!r}: {denied} {str(locked)!r} (permission"),
        (locked / "2026" / "r.json", f"{denied} {str(locked)!r}"),  # the folder where 2026/ would be made
    ):
        with pytest.raises(SystemExit) as exc:
            _import(script).main([option, str(path)])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [blocker, locked] and not any(locked.iterdir())


@pytest.mark.parametrize(
    ("script", "worker"),
    [
        ("bench_ops", ["--worker", "pool_mean", "ours", "{}"]),
        ("bench_overhead", None),
        ("bench_soft", ["--worker", "soft"]),
        ("bench_transparent_init", None),
        ("bench_uniformize", ["--_child", '[{}, "floor"]']),
        ("op_coverage", None),
    ],
)
def test_a_default_result_folder_that_cannot_be_written_is_refused_before_the_measurements(
    script, worker, tmp_path, monkeypatch, capsys
):
    """Only ``--out`` was checked: without it a full run measured for minutes and then failed to write its
    default result file. Its folder is checked as an output folder, where the run writes it: not for a
    ``--quick`` run (it writes nothing without ``--out``, op_coverage's CSV included),
    nor for a worker process (its parent writes)."""
    module = _import(script)
    folder = module.OUT.parent if script == "op_coverage" else _import("_atomic").RESULTS
    deny_writes(monkeypatch, folder)
    ap = module.build_parser()
    with pytest.raises(SystemExit) as exc:
        module.check_args(ap, ap.parse_args([]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no --out given, and the default result folder cannot be used" in err
    assert f"this user may not write in the folder {str(folder)!r}" in err
    module.check_args(ap, ap.parse_args(["--quick"]))
    if worker is not None:
        module.check_args(ap, ap.parse_args(worker))
    module.check_args(ap, ap.parse_args(["--out", str(tmp_path / "r.json")]))  # elsewhere: no objection


def test_a_result_path_below_a_file_is_refused_however_deep(tmp_path, capsys):
    """Not only the immediate parent: ``a_file/2026/r.json`` lies below a file as well (that parent does
    not exist, and the write after the measurements would fail)."""
    import argparse

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        _import("_harness").check_output(argparse.ArgumentParser(), "--out", blocker / "2026" / "r.json")
    assert exc.value.code == 2 and f"lies below the file {str(blocker)!r}" in capsys.readouterr().err


def test_bench_ops_quick_uses_the_repeats_given(tmp_path):
    """--quick ignored an explicit --repeats (2 runs) and recorded the unused default (10) in the JSON."""
    out = tmp_path / "ops.json"
    data = _import("bench_ops").main(
        ["--quick", "--ops", "relabel_contiguous", "--repeats", "3", "--out", str(out)]
    )
    (entry,) = data["ops"].values()
    assert data["meta"]["repeats"] == entry["repeats"] == len(entry["rows"][0]["times_ms"]) == 3
    assert _import("bench_ops").main(["--quick", "--ops", "relabel_contiguous"])["meta"]["repeats"] == 2


def test_bench_soft_quick_uses_the_repeats_given(tmp_path):
    data = _import("bench_soft").main(
        ["--quick", "--in-process", "--repeats", "1", "--out", str(tmp_path / "s.json")]
    )
    assert data["soft"]["repeats"] == 1  # --quick's 2 before, whatever --repeats said


def test_bench_uniformize_parts_quick_uses_the_repeats_given(monkeypatch, tmp_path):
    """--quick ignored an explicit --repeats (3 runs per part, whatever was given)."""
    parts_script = _import("bench_uniformize_parts")
    used: list[int] = []
    monkeypatch.setattr(
        parts_script, "measure_parts", lambda dev, shape, cells, n, compile_: used.append(n) or {}
    )
    for argv, want in ((["--quick", "--repeats", "5"], 5), (["--quick"], 3)):
        assert parts_script.main(argv)["repeats"] == want
    assert parts_script.main(["--repeats", "2", "--out", str(tmp_path / "p.json")])["repeats"] == 2
    assert used == [5, 3, 2]


def test_bench_transparent_init_quick_uses_the_seeds_given(monkeypatch):
    bench = _import("bench_transparent_init")
    seen = []

    def stop(seeds, shape):
        seen.append(seeds)
        raise KeyboardInterrupt  # the tables are what this test is about: stop before them

    monkeypatch.setattr(bench, "table2", stop)
    for argv, seeds in ((["--quick", "--seeds", "5"], 5), (["--quick"], 3), ([], 10)):
        with pytest.raises(KeyboardInterrupt):
            bench.main(argv)
        assert seen.pop() == seeds


def test_bench_overhead_quick(tmp_path, capsys):
    """Every op at the tiny size, in this process: the table, the JSON, and counts that repeat exactly."""
    bench = _import("bench_overhead")
    out = tmp_path / "overhead.json"
    data = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == data["rows"]
    rows = {(r["op"], r["validate"]): r for r in data["rows"]}
    assert {op for op, _ in rows} == set(bench.CASES)
    for (op, validate), row in rows.items():
        assert row["fwd_ops"] > 0 and row["fwd_allocs"] > 0, op
        # the regression test of the library asserts the same (test_call_overhead); the connectivity step
        # runs on the host (numpy): one copy of the labels there, whatever validate says
        if validate == "False" and op != "hard_superpixels connectivity":
            assert row["fwd_syncs"] == row.get("bwd_syncs", 0) == 0, op
    assert rows[("uniformize", "True")]["fwd_syncs"] == 1  # the id range: one read
    assert "bwd_ops" in rows[("uniformize", "False")] and "bwd_ops" not in rows[("hard_superpixels", "False")]
    again = bench.main(["--quick", "--threads", "1", "--ops", "uniformize,spixel_loss", "--out", str(out)])
    # every count repeats exactly; the peaks need not: the backward of spixel_loss peaked at 9.0, 10.5 or
    # 11.25 KiB in repeated runs in one process (the order of the frees varies), so they are bounded instead
    peaks = ("fwd_peak_kib", "bwd_peak_kib")
    first = [r for r in data["rows"] if r["op"] in ("uniformize", "spixel_loss")]
    assert [_without(r, peaks) for r in again["rows"]] == [_without(r, peaks) for r in first]
    for row in again["rows"] + first:
        for phase in ("fwd", "bwd"):
            if f"{phase}_kib" in row:
                assert 0 < row[f"{phase}_peak_kib"] <= row[f"{phase}_kib"], (row["op"], phase)
    assert "uniformize" in capsys.readouterr().out


def test_bench_overhead_counts_the_connectivity_loop_the_code_runs(monkeypatch):
    """The loops row of the connectivity step states the trips the code makes: one scipy
    ``connected_components`` graph per image since 2026-12-06 (it still said one ``scipy.ndimage.label`` per
    distinct id of each image, 452 trips at the typical size, which the code no longer ran)."""
    import scipy.ndimage
    import scipy.sparse.csgraph

    import sparse_ops as so

    bench = _import("bench_overhead")
    inputs = bench.make_inputs({"b": 3, "c": 2, "h": 20, "w": 24, "cell": 4}, torch.device("cpu"))
    (row,) = [r for r in bench.loops(inputs) if "_components" in r["where"]]
    calls = {"label": 0, "connected_components": 0}
    for module, name in ((scipy.ndimage, "label"), (scipy.sparse.csgraph, "connected_components")):
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    so.hard_superpixels(inputs.assoc.detach(), inputs.cell, connectivity=True)
    assert calls == {"label": 0, "connected_components": row["trips"]} and row["trips"] == 3
    assert "connected_components" in row["loop"]


def _without(row: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def test_bench_overhead_refuses_unknown_names(capsys):
    bench = _import("bench_overhead")
    for argv in (["--ops", "nope"], ["--sizes", "huge"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2
    assert "--sizes: unknown ['huge']" in capsys.readouterr().err


def test_op_counter_counts_each_kind_of_host_sync():
    """Every way of reading a value on the host is one sync; ops that read nothing are none."""
    counting = _import("_counting")
    x = torch.arange(6.0)
    # lambdas, not bound methods: the counter patches Tensor.tolist / numpy, looked up at call time
    syncing = {
        "item": lambda: x[0].item(),  # noqa: PLW0108
        "int": lambda: int(x.max()),
        "bool": lambda: bool(x.any()),
        "tolist": lambda: x.tolist(),  # noqa: PLW0108
        "numpy": lambda: x.numpy(),  # noqa: PLW0108
        "nonzero": lambda: x.nonzero(),  # noqa: PLW0108
        "unique": lambda: torch.unique(x),
        "boolean index": lambda: x[x > 2],
        "masked_select": lambda: x.masked_select(x > 2),
        "repeat_interleave": lambda: torch.repeat_interleave(x, torch.ones(6, dtype=torch.long)),
        # a bool on the host, and an output sized by the values: no sync was counted for these
        "equal": lambda: torch.equal(x, x),
        "allclose": lambda: torch.allclose(x, x),
        "bincount": lambda: torch.bincount(x.long()),
    }
    for name, fn in syncing.items():
        with counting.OpCounter().active() as counter:
            fn()
        assert counter.syncs == 1, (name, dict(counter.sync_names))
    quiet = [
        lambda: x + 1,
        lambda: x[torch.tensor([0, 2])],
        lambda: torch.repeat_interleave(x, torch.ones(6, dtype=torch.long), output_size=6),
        lambda: torch.aminmax(x),
    ]
    for fn in quiet:
        with counting.OpCounter().active() as counter:
            fn()
        assert counter.syncs == 0 and counter.ops > 0
    assert torch.Tensor.tolist(x) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the method is restored


def test_op_counter_counts_a_boolean_index_of_every_form():
    """A boolean index is a ``nonzero`` whatever its dtype (``uint8``, the old mask), its place among the
    indices (after a ``None`` of a ``:``) and the op (read, assignment, ``index_put``, ``_index_put_impl_``);
    an integer index after a ``None`` reads nothing."""
    counting = _import("_counting")
    x = torch.arange(6.0)
    mask, rows = x > 2, x.view(2, 3)
    columns, zero = torch.tensor([True, False, True]), torch.zeros(())

    def assign() -> None:
        x.clone()[mask] = 0

    syncing = {
        "uint8 mask": lambda: x[mask.to(torch.uint8)],
        "mask after a colon": lambda: rows[:, columns],
        "masked assignment": assign,
        "index_put": lambda: x.index_put((mask,), zero),
        "_index_put_impl_": lambda: torch.ops.aten._index_put_impl_(x.clone(), [mask], zero),
    }
    for name, fn in syncing.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # indexing with uint8 is deprecated
            with counting.OpCounter().active() as counter:
                fn()
        assert counter.syncs == 1, (name, dict(counter.sync_names))
    index = torch.tensor([0, 2])
    with counting.OpCounter().active() as counter:
        rows[:, index]
    assert counter.syncs == 0 and counter.ops > 0


def test_op_counter_counts_every_unique_op():
    """Each op of ``unique``'s family sizes its output by the values: one sync each."""
    counting = _import("_counting")
    x = torch.tensor([3.0, 3.0, 1.0, 2.0])
    rows = x.view(2, 2)
    syncing = {
        "_unique": lambda: torch._unique(x),
        "unique dim": lambda: torch.unique(rows, dim=0),
        "unique_consecutive": lambda: torch.unique_consecutive(x),
        "unique_consecutive dim": lambda: torch.unique_consecutive(rows, dim=0),
        "unique_dim_consecutive": lambda: torch.ops.aten.unique_dim_consecutive(rows, 0),
    }
    for name, fn in syncing.items():
        with counting.OpCounter().active() as counter:
            fn()
        assert counter.syncs == 1, (name, dict(counter.sync_names))


def test_op_counter_counts_each_op_once_and_host_data_apart():
    """``ops`` is the number of aten ops dispatched (one for an add); ``torch.tensor`` of Python data is one
    ``lift_fresh``, a host-to-device copy on CUDA, counted in ``from_host`` and not as a sync."""
    counting = _import("_counting")
    x = torch.arange(6.0)
    with counting.OpCounter().active() as counter:
        x + 1
    assert (counter.ops, counter.syncs, counter.from_host) == (1, 0, 0)
    with counting.OpCounter().active() as counter:
        torch.tensor([1, 2])
    assert (counter.ops, counter.syncs, counter.from_host) == (1, 0, 1)


def test_op_counter_returns_what_tolist_and_numpy_return_and_restores_both():
    """The counted ``Tensor.tolist`` and ``Tensor.numpy`` are the originals (arguments passed on, results
    returned) and are put back afterwards."""
    counting = _import("_counting")
    tolist, numpy = torch.Tensor.tolist, torch.Tensor.numpy
    x = torch.arange(3.0, requires_grad=True)
    with counting.OpCounter().active() as counter:
        listed = x.tolist()
        array = x.numpy(force=True)  # without force=True a tensor that requires grad is refused
    assert listed == [0.0, 1.0, 2.0] and array.tolist() == [0.0, 1.0, 2.0]
    assert dict(counter.sync_names) == {"Tensor.tolist": 1, "Tensor.numpy": 1}
    assert torch.Tensor.tolist is tolist and torch.Tensor.numpy is numpy


def test_is_sync_of_repeat_interleave_depends_on_its_repeats():
    """``repeat_interleave``'s output size is the sum of a tensor of repeats (a sync unless ``output_size``
    is given); integer repeats size it from the shape alone."""
    counting = _import("_counting")
    aten = torch.ops.aten
    x, repeats = torch.arange(3.0), torch.ones(3, dtype=torch.long)
    assert counting.is_sync(aten.repeat_interleave.self_Tensor, (x, repeats), {})
    assert not counting.is_sync(aten.repeat_interleave.self_Tensor, (x, repeats), {"output_size": 3})
    assert counting.is_sync(aten.repeat_interleave.Tensor, (repeats,), {})
    assert not counting.is_sync(aten.repeat_interleave.self_int, (x, 2), {})


def test_allocations_are_counted_exactly():
    counting = _import("_counting")
    one = counting.allocations(lambda: torch.empty(1000, dtype=torch.float64))
    assert one.count == 1 and one.total_bytes == one.peak_bytes == 8000
    two = counting.allocations(lambda: torch.empty(10) + torch.empty(10))  # the first freed after the add
    assert two.count == 3 and two.total_bytes == 120


def test_allocations_peak_is_of_the_bytes_live_at_once():
    """Three buffers, each freed before the next is made: three allocations, the bytes of three, the peak of
    one."""
    counting = _import("_counting")

    def one_at_a_time() -> None:
        for _ in range(3):
            torch.empty(1000)

    counts = counting.allocations(one_at_a_time)
    assert (counts.count, counts.total_bytes, counts.peak_bytes) == (3, 12000, 4000)


def test_allocations_orders_the_events_by_their_start(monkeypatch):
    """The profiler lists its events grouped (by thread, for instance), not in time order: the peak is of the
    events in time order. Two threads each allocate 100 bytes and free them, the second inside the first's
    lifetime: 200 bytes live at once, not the 100 of the events in the order listed."""
    counting = _import("_counting")

    class Event:
        def __init__(self, name: str, start: int, nbytes: int) -> None:
            self._name, self._start, self._nbytes = name, start, nbytes

        def name(self) -> str:
            return self._name

        def start_ns(self) -> int:
            return self._start

        def nbytes(self) -> int:
            return self._nbytes

    listed = [Event("[memory]", 1, 100), Event("[memory]", 4, -100), Event("aten::empty", 2, 0)]
    listed += [Event("[memory]", 2, 100), Event("[memory]", 3, -100)]
    results = argparse.Namespace(events=lambda: listed)
    prof = argparse.Namespace(profiler=argparse.Namespace(kineto_results=results))
    monkeypatch.setattr(counting, "profile", lambda **kwargs: contextlib.nullcontext(prof))
    counts = counting.allocations(lambda: None)
    assert (counts.count, counts.total_bytes, counts.peak_bytes) == (2, 200, 200)


def test_the_overhead_table_of_the_benchmarks_page_is_the_committed_result():
    """The counts quoted on docs/benchmarks.rst are those of the committed JSON (not copied by hand wrong)."""
    import csv

    data = json.loads((BENCH / "results" / "overhead_cpu_20261201_xeon.json").read_text())
    rows = {(r["op"], r["size"], r["validate"]): r for r in data["rows"]}
    page = (ROOT / "docs" / "benchmarks.rst").read_text()
    section = page.split("Per-call overhead, counted\n")[1].split("How to read it:")[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith('   "')]
    assert len(lines) == len({op for op, _, _ in rows})
    names = {"hard_superpixels, connectivity": "hard_superpixels connectivity"}
    names["TransparentConv1x1(21, [42]) built"] = "TransparentConv1x1()"

    def ops(row: dict) -> str:
        return f"{row['fwd_ops']} / {row.get('bwd_ops', '-')}"

    for shown, tiny, typical, syncs_true, syncs_false, allocs, kib in csv.reader(
        lines, skipinitialspace=True
    ):
        op = names.get(shown, shown)
        plain = {size: rows.get((op, size, "False")) or rows[(op, size, "-")] for size in ("tiny", "typical")}
        assert (tiny, typical) == (ops(plain["tiny"]), ops(plain["typical"])), op
        checked = rows.get((op, "typical", "True"))
        syncs = (checked["fwd_syncs"] + checked.get("bwd_syncs", 0)) if checked else "-"
        assert syncs_true == str(syncs), op
        assert syncs_false == str(plain["typical"]["fwd_syncs"] + plain["typical"].get("bwd_syncs", 0)), op
        assert allocs == str(plain["typical"]["fwd_allocs"]), op
        bwd = f"{plain['typical']['bwd_kib']:.0f}" if "bwd_kib" in plain["typical"] else "-"
        assert kib == f"{plain['typical']['fwd_kib']:.0f} / {bwd}", op


_YAML = """\
- func: gather(Tensor self, int dim, Tensor index) -> Tensor
  structured_delegate: gather.out

- func: gather.out(Tensor self, int dim, Tensor index, *, Tensor(a!) out) -> Tensor(a!)
  structured: True
  dispatch:
    CPU, CUDA: gather_out
    MPS: gather_out_mps

- func: add.out(Tensor self, Tensor other, *, Tensor(a!) out) -> Tensor(a!)
  ufunc_inner_loop:
    Generic: add (AllAndComplex, BFloat16, Half, ComplexHalf)
  dispatch:
    SparseCPU: add_out_sparse_cpu
    MPS: add_out_mps

- func: stack(Tensor[] tensors, int dim=0) -> Tensor
  dispatch:
    CompositeExplicitAutograd: stack

- func: _to_sparse_csr(Tensor self, int? dense_dim=None) -> Tensor
  dispatch:
    CPU, CUDA: dense_to_sparse_csr
    SparseCPU, SparseCUDA: coo_to_sparse_csr

- func: cat(Tensor[] tensors, int dim=0) -> Tensor
  dispatch:
    CPU, CUDA: cat
"""


def _parsed_yaml(cov, tmp_path: Path, text: str) -> dict:
    """``op_coverage.parse_yaml`` of ``text`` written as ``tmp_path / "native_functions.yaml"``."""
    path = tmp_path / "native_functions.yaml"
    path.write_text(text)
    return cov.parse_yaml(path)


def test_op_coverage_reads_the_dispatch_entries(tmp_path):
    """Kernels by dispatch key, through a structured delegate, from a ufunc loop (CPU and CUDA only), a
    composite entry followed into the ops it decomposes into, and a sparse layout's own key."""
    cov = _import("op_coverage")
    entries = _parsed_yaml(cov, tmp_path, _YAML)
    assert cov.kernel(entries, "gather", "MPS") == ("kernel", None)
    assert cov.kernel(entries, "add.out", "CUDA") == ("kernel", None)
    assert cov.kernel(entries, "add.out", "MPS") == ("kernel", None)
    assert cov.kernel(entries, "add.out", "XPU") == ("none", None)
    assert cov.kernel(entries, "stack", "MPS") == ("composite", "CompositeExplicitAutograd")
    assert cov.kernel(entries, "no_such_op", "MPS") == ("unknown", None)
    record = cov.Record()
    record.ops["stack"] = cov.Seen(children={"cat"})
    record.ops["_to_sparse_csr [coo]"] = cov.Seen(layouts={"coo"})
    assert cov.status(entries, record, "stack", "CUDA") == "yes (CompositeExplicitAutograd)"
    assert cov.status(entries, record, "stack", "MPS") == "NO (CompositeExplicitAutograd into cat)"
    assert cov.status(entries, record, "_to_sparse_csr [coo]", "CUDA") == "yes (SparseCUDA)"
    assert cov.status(entries, record, "_to_sparse_csr [coo]", "MPS") == "NO"


@pytest.mark.slow
def test_op_coverage_quick(tmp_path):
    """The tiny size: every device op of the no-float64 path has an MPS kernel in this torch; the float64
    steps are host ops there; CSR matrices are built on the CUDA path only; the committed table lists every
    op."""
    cov = _import("op_coverage")
    out = tmp_path / "coverage.csv"
    stdout = _run("op_coverage.py", "--quick", "--out", str(out))
    version = cov._version(torch.__version__)  # the columns' major.minor
    rows = {row["op"]: row for row in csv.DictReader(out.read_text().splitlines())}
    columns = [*cov.COLUMNS, f"MPS {version}", f"CUDA {version}", "known gaps"]
    assert list(next(iter(rows.values()))) == columns
    for op in ("scatter_add_", "gather", "sort.stable", "searchsorted.Tensor", "cumsum"):
        assert rows[op]["runs on"] == "cuda device, mps device", rows[op]
        assert rows[op][f"MPS {version}"] == "yes", rows[op]
    assert rows["reciprocal"]["runs on"] == "cuda device, mps host"  # 1 / count: float64 on the host there
    for op in ("mm [csr]", "_to_sparse_csr [coo]"):  # backend="sparse" and a CSR to_sparse: refused on MPS
        assert rows[op]["runs on"] == "cuda device" and rows[op][f"MPS {version}"] == "NO", rows[op]
    assert cov.gaps(list(rows.values())) == []
    assert "device ops without an MPS kernel: none" in stdout
    assert "not run" not in stdout  # every case ran, forward and backward
    committed = {row["op"] for row in csv.DictReader(cov.OUT.read_text().splitlines())}
    assert set(rows) <= committed, f"re-run benchmarks/op_coverage.py: {sorted(set(rows) - committed)}"


def test_op_coverage_replaces_the_committed_table_only_with_all_its_columns(monkeypatch, tmp_path, capsys):
    """``--quick`` without ``--out`` rewrote the committed ``docs/_static/mps_op_coverage.csv`` with the tiny
    size's reduced table, and a full run without ``--yaml`` dropped its torch 2.11 columns, which the docs
    cite (a run must not replace a committed result). Now a ``--quick`` run writes nothing without ``--out``,
    and a full run into the committed table is refused before it measures unless it has every version's
    yaml."""
    cov = _import("op_coverage")
    committed = tmp_path / "mps_op_coverage.csv"
    committed.write_text("op,runs on,MPS 2.11,MPS 2.14,CUDA 2.11,CUDA 2.14,known gaps\n")
    monkeypatch.setattr(cov, "OUT", committed)
    monkeypatch.setattr(cov, "ROOT", tmp_path)
    monkeypatch.setattr(cov.torch, "__version__", "2.14.1+cpu")
    ap = cov.build_parser()
    with pytest.raises(SystemExit) as exc:
        cov.check_args(ap, ap.parse_args([]))
    assert exc.value.code == 2
    assert "has the columns of torch 2.11, which this run would drop: pass --yaml 2.11=PATH" in (
        capsys.readouterr().err
    )
    yaml = tmp_path / "native_functions.yaml"
    yaml.write_text("")
    for argv in (["--out", str(committed)], ["--quick", "--out", str(committed)]):  # the same table, named
        with pytest.raises(SystemExit):
            cov.check_args(ap, ap.parse_args(argv))
    assert "a smoke run does not replace the committed table" in capsys.readouterr().err
    cov.check_args(ap, ap.parse_args(["--yaml", f"2.11={yaml}"]))  # every column: no objection
    cov.check_args(ap, ap.parse_args(["--yaml", f"2.11={yaml}", "--out", str(committed)]))
    cov.check_args(ap, ap.parse_args(["--out", str(tmp_path / "other.csv")]))
    cov.check_args(ap, ap.parse_args(["--quick"]))
    monkeypatch.setattr(cov, "record_all", lambda quick: (_ for _ in ()).throw(RuntimeError("measured")))
    before = committed.read_bytes()
    with pytest.raises(RuntimeError, match="measured"):  # (the measurement would come next)
        cov.main(["--quick"])
    assert committed.read_bytes() == before


def test_op_coverage_records_only_the_ops_of_a_composite_kernel():
    """The decomposition of a composite entry is what its kernel dispatches: not the ``clone`` and ``detach``
    of the argument copies it runs on (recorded as its children before)."""
    cov = _import("op_coverage")
    x = torch.randn(3, 4)
    composite = "CompositeExplicitAutograd"
    assert cov._decomposition(torch.ops.aten.sum.default, (x,), {}, composite) == {"sum.dim_IntList"}
    zeros = cov._decomposition(torch.ops.aten.zeros_like.default, (x,), {}, composite)
    assert zeros == {"empty_like", "zero_"}
    y, index = torch.zeros(3), [torch.tensor([1])]
    put = cov._decomposition(torch.ops.aten.index_put_.default, (y, index, torch.ones(1)), {}, composite)
    assert put == {"_index_put_impl_"} and not y.any()  # an in-place op changes the copies only


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a process's children from /proc")
def test_a_benchmark_stopped_by_sigterm_stops_its_measuring_child(tmp_path):
    """``bench_soft.py`` measures in a fresh child process; SIGTERM ended the parent at once and the child
    ran on, orphaned (measured: 1 of 2 SIGTERMs left a process running after the parent). The child is
    now killed first, the parent prints one line and exits 143, and no result file is written."""
    import signal
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "bench_soft.py"),
            "--quick",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "r.json"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def measuring_children() -> list[int]:
        """The ``--worker`` children: ``import torch`` runs ``ldconfig -p`` (ctypes.util.find_library, from
        cuda-pathfinder), a child that a slow start showed long enough to be taken for the measuring one,
        and the SIGTERM then hit the import, before the script's handler was installed (exit -15)."""
        found = []
        for pid in children_file.read_text().split() if children_file.exists() else []:
            try:
                if b"--worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:  # ended meanwhile
                continue
        return found

    children: list[int] = []
    deadline = time.monotonic() + 120
    try:
        while not children and time.monotonic() < deadline and proc.poll() is None:
            children = measuring_children()
            time.sleep(0.05)
        assert children, "no measuring child appeared"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "bench_soft.py: stopped by SIGTERM (exit status 143)" in err and "Traceback" not in err, err[
        -2000:
    ]
    for child in children:  # gone (reaped by the parent), not running on
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="sends POSIX signals to a child process")
@pytest.mark.parametrize(
    "signum, status", [(2, 130), (15, 143), (1, 129)], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_run_script_turns_a_signal_into_one_line_and_128_plus_the_signal(signum, status):
    """The benchmarks' entry point (``_harness.run_script``), stopped while its ``main()`` runs: one line on
    stderr, exit status 130 / 143 / 129, no traceback; the signal is sent once the child's ``main()`` runs.
    SIGHUP (a closed terminal) ended the process silently before."""
    import signal

    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "from _harness import run_script\n"
        "def main():\n"
        "    print('main is running', flush=True)\n"
        "    time.sleep(300)\n"
        "    return {}\n"
        "raise SystemExit(run_script(main, 'bench_demo.py'))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "main is running\n", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    name = signal.Signals(signum).name
    assert err == f"bench_demo.py: stopped by {name} (exit status {status}); no result file written\n", err
    assert proc.returncode == status


@pytest.mark.parametrize(
    "script",
    [
        "ab_fusion",
        "ab_uniformize",
        pytest.param(  # it builds the example's models: the examples extra
            "bench_joint",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("torchvision") is None, reason="needs torchvision (examples extra)"
            ),
        ),
        "bench_ops",
        "bench_overhead",
        "bench_soft",
        "bench_transparent_init",
        "bench_uniformize",
        "op_coverage",
    ],
)
def test_every_benchmark_runs_its_main_through_run_script(script, monkeypatch, capsys):
    """Run as a file, each benchmark calls its ``main`` through ``_harness.run_script``: a Ctrl-C inside it is
    one line and exit status 130 (five of them printed Python's traceback). The script's real ``__main__``
    block runs here with ``main`` swapped for one that raises ``KeyboardInterrupt`` at once; an unknown
    option on the command line makes a script that calls ``main()`` itself fail with argparse's status 2."""
    import runpy

    harness = _import("_harness")
    real, called = harness.run_script, []

    def interrupted() -> int:
        raise KeyboardInterrupt

    def run_script(main, prog, *args, **kwargs):
        called.append((main.__code__.co_filename, main.__name__, prog))
        return real(interrupted, prog, *args, **kwargs)

    monkeypatch.setattr(harness, "run_script", run_script)
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])  # the script's own insertions are undone
    path = BENCH / f"{script}.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--no-such-option"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(path), run_name="__main__")
    err = capsys.readouterr().err
    assert exc.value.code == 130, err[-2000:]
    assert called == [(str(path), "main", f"{script}.py")]
    assert err == f"{script}.py: stopped by SIGINT (exit status 130); no result file written\n"


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGKILL, and no process probe: nothing is removed")
def test_benchmark_results_are_written_by_the_examples_one_atomic_writer(tmp_path) -> None:
    """The benchmarks had a twin of the example's atomic writer without its clean-up: a benchmark SIGKILLed
    while writing its JSON left its temporary file, which no later run removed. One implementation now,
    which imports no torch (``gpu_check.py`` runs before torch is known to work) and removes a dead writer's
    file."""
    probe = (
        "import _atomic, gpu_check; from examples.voc_joint import atomic; "
        "print(_atomic.write_text_atomic is atomic.write_text_atomic, 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout found from the folder
    assert _benchmarks_probe(probe, env, tmp_path).split() == ["True", "False"]
    killed = subprocess.run(  # a benchmark killed while its result was half-written
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); "
            "from examples.voc_joint.atomic import temporary_path; "
            "open(temporary_path(Path(sys.argv[1]) / 'joint.json'), 'w').write('{\"cpu'); "
            "os.kill(os.getpid(), signal.SIGKILL)",
            str(tmp_path),
            str(ROOT),
        ],
        check=False,
    )
    assert killed.returncode == -9 and len(list(tmp_path.iterdir())) == 1
    sys.path.insert(0, str(BENCH))
    try:
        atomic_writer = importlib.import_module("_atomic").write_text_atomic
    finally:
        sys.path.remove(str(BENCH))
    atomic_writer(tmp_path / "joint.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joint.json"]


def _beside_another_checkout(tmp_path: Path, module: str, source: str, probe: str) -> str:
    """The output of ``probe`` (Python, with the benchmarks folder first on ``sys.path``), run where another
    checkout's ``examples.voc_joint.<module>`` (``source``) is on ``PYTHONPATH``, before this checkout's."""
    other = tmp_path / "other" / "examples" / "voc_joint"
    other.mkdir(parents=True)
    (other.parent / "__init__.py").write_text("")
    (other / "__init__.py").write_text("")
    (other / f"{module}.py").write_text(source)
    return _benchmarks_probe(probe, {**os.environ, "PYTHONPATH": str(tmp_path / "other")}, tmp_path)


def _benchmarks_probe(probe: str, env: dict[str, str], cwd: Path) -> str:
    """The output of ``probe`` (Python, after ``import sys`` and with the benchmarks folder first on
    ``sys.path``) run in a new interpreter with ``env`` in ``cwd``; it must exit 0."""
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, sys.argv[1]); {probe}", str(BENCH)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_benchmark_results_are_written_by_the_writer_of_their_own_checkout(tmp_path) -> None:
    """``_atomic`` puts its checkout first on ``sys.path``: another ``examples`` package found before it (an
    editable install of another checkout, here one on ``PYTHONPATH``) gave the benchmarks that checkout's
    writer, not the one of the checkout they lie in, as the module says."""
    out = _beside_another_checkout(
        tmp_path,
        "atomic",
        "def write_text_atomic(): ...\ndef remove_dead_writers_files(): ...\n",
        "import _atomic; print(_atomic.write_text_atomic.__code__.co_filename)",
    )
    assert Path(out.strip()) == ROOT / "examples" / "voc_joint" / "atomic.py"


def test_run_script_stops_with_the_signals_module_of_its_own_checkout(tmp_path) -> None:
    """``run_script`` put its checkout last on ``sys.path`` when the ``examples`` package was not imported yet
    (a worker of ``ab_uniformize.py``): another checkout's ``examples`` found before it (an editable install,
    here one on ``PYTHONPATH``) gave the script that checkout's signal handling. It goes first now."""
    out = _beside_another_checkout(
        tmp_path,
        "signals",
        "def run_stoppable(fn, prog, note):\n    return 7\n",
        "import _harness; print(_harness.run_script(lambda: 0, 'probe.py')); "
        "import examples.voc_joint.signals as s; print(s.__file__)",
    )
    status, module = out.split()
    assert (status, Path(module)) == ("0", ROOT / "examples" / "voc_joint" / "signals.py")


def test_write_json_is_strict_json_indented_by_2_ending_in_a_newline(tmp_path, capsys) -> None:
    """The scripts wrote their results in four styles (indent 1 or 2, with or without a final newline, NaN
    allowed or refused, ``default=str`` or none): one style now, in a folder it makes, keys in their order."""
    atomic = _import("_atomic")
    path = tmp_path / "new" / "folder" / "r.json"
    assert atomic.write_json(path, {"b": 1, "a": [1.5, (2, "x")], "none": None, "ok": True}) == []
    text = path.read_text()
    lines = ["{", '  "b": 1,', '  "a": [', "    1.5,", "    [", "      2,", '      "x"', "    ]", "  ],"]
    assert text == "\n".join([*lines, '  "none": null,', '  "ok": true', "}", ""])
    assert list(json.loads(text)) == ["b", "a", "none", "ok"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
    assert capsys.readouterr().err == ""


def test_write_json_writes_nan_and_infinity_as_null_and_names_each_on_stderr(tmp_path, capsys) -> None:
    """``json.dumps`` wrote ``NaN`` and ``Infinity``, which are not JSON (``jq`` and browsers refuse the
    file), and ``bench_joint.py`` refused them after its whole run: they are written as null, each named in a
    note on stderr."""
    atomic = _import("_atomic")
    path = tmp_path / "r.json"
    data = {"rows": [{"ms": 1.0, "err": float("nan")}], "ratio": float("inf"), "low": -float("inf")}
    nulled = atomic.write_json(path, data)
    assert nulled == ["nan at result['rows'][0]['err']", "inf at result['ratio']", "-inf at result['low']"]

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "rows": [{"ms": 1.0, "err": None}],
        "ratio": None,
        "low": None,
    }
    assert data["ratio"] == float("inf")  # the caller's result is left as it was
    assert capsys.readouterr().err == f"{path}: no JSON for {', '.join(nulled)}; written as null\n"


def test_write_json_refuses_a_value_json_has_no_type_for_and_keeps_the_earlier_file(tmp_path) -> None:
    """A value JSON has no type for is refused with its place, before anything is written (``gpu_check.py``
    wrote it as ``str(value)``, the others failed in ``json.dumps`` without saying where)."""
    atomic = _import("_atomic")
    path = tmp_path / "r.json"
    path.write_text("earlier\n")
    with pytest.raises(TypeError, match=r"JSON values only, got \w*Path .* at result\['config'\]\['out'\]"):
        atomic.write_json(path, {"config": {"out": Path("/tmp/x")}})
    assert path.read_text() == "earlier\n" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_write_json_takes_a_str_path_and_makes_no_folder_for_a_refused_result(tmp_path) -> None:
    """``path`` may be a ``str``, as its type says (the fake stages of ``test_gpu_check.py`` pass one); a
    refused result writes nothing, not even the folder it would have made."""
    atomic = _import("_atomic")
    with pytest.raises(TypeError, match=r"at result\['out'\]"):
        atomic.write_json(str(tmp_path / "new" / "r.json"), {"out": Path("/tmp/x")})
    assert list(tmp_path.iterdir()) == []
    assert atomic.write_json(str(tmp_path / "new" / "r.json"), {"rows": []}) == []
    assert (tmp_path / "new" / "r.json").read_text() == '{\n  "rows": []\n}\n'


def test_write_json_stopped_while_writing_leaves_the_earlier_file_whole(tmp_path, monkeypatch) -> None:
    """The result is written to a temporary file renamed into place: a run stopped before the rename leaves
    the earlier result as it was and no temporary file."""
    atomic = _import("_atomic")
    path = tmp_path / "joint.json"
    path.write_text('{"cuda_resnet101_b8_512": {}}\n')

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(path, {"cpu_resnet18_b2_256": {"rows": []}})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joint.json"]
    assert path.read_text() == '{"cuda_resnet101_b8_512": {}}\n'


def test_stamped_result_is_a_new_file_in_the_results_folder(monkeypatch) -> None:
    """The default name of the scripts that write a new file each run (bench_ops, bench_overhead, bench_soft,
    bench_uniformize), as the docs name it: ``<stem>_<UTC yyyymmdd-HHMM>.json`` in benchmarks/results."""
    atomic = _import("_atomic")
    now = time.struct_time((2026, 12, 2, 15, 30, 0, 2, 336, 0))
    monkeypatch.setattr(time, "gmtime", lambda *args: now)
    assert (
        atomic.stamped_result("bench_ops_cpu_1thread")
        == BENCH / "results" / "bench_ops_cpu_1thread_20261202-1530.json"
    )


@pytest.mark.parametrize(
    "script",
    [
        "ab_fusion",
        "ab_uniformize",
        "bench_joint",
        "bench_ops",
        "bench_overhead",
        "bench_soft",
        "bench_transparent_init",
        "bench_uniformize",
        "gpu_check",
    ],
)
def test_every_json_result_is_written_by_the_one_writer(script) -> None:
    """Each script writes its JSON result through ``write_json`` and names a new file with
    ``stamped_result``: no call of the atomic writer with its own ``json.dumps``, no stamp of its own."""
    source = (BENCH / f"{script}.py").read_text()
    assert "write_json(" in source
    for start in (m.end() for m in re.finditer(r"write_text_atomic\(", source)):
        depth, end = 1, start
        while depth:
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            end += 1
        assert "json.dumps" not in source[start:end], source[start:end]
    assert "%Y%m%d" not in source


def test_peak_mib_reads_the_memory_figure_memory_fields_recorded() -> None:
    """bench_ops and bench_soft each had a ``_peak`` reading the fields of ``memory_fields``: one helper."""
    harness = _import("_harness")
    assert harness.peak_mib({"peak_cuda_extra_mib": 3.0, "median_ms": 1.0}) == 3.0
    assert harness.peak_mib({"peak_rss_growth_mib": 2.5, "memory_method": "vmhwm_reset"}) == 2.5
    assert harness.peak_mib({"peak_rss_growth_mib": None, "memory_method": "ru_maxrss"}) is None
    assert harness.peak_mib({"median_ms": 1.0}) is None


@pytest.mark.parametrize("script", ["bench_ops", "bench_soft", "bench_uniformize"])
def test_a_missing_figure_is_a_nan_cell_of_the_width_of_its_column(script) -> None:
    """bench_ops, bench_soft and bench_uniformize each had the same ``_fmt``: one ``cell`` now, which they
    import (``None``, no figure, printed as ``nan`` in the column's width)."""
    harness = _import("_harness")
    assert harness.cell(None, ">10.1f") == f"{'nan':>10}" and harness.cell(2.25, ">9.2f") == f"{2.25:>9.2f}"
    assert harness.cell(None, ".1e") == "nan"
    bench = _import(script)
    assert bench.cell is harness.cell and not hasattr(bench, "_fmt") and not hasattr(bench, "_peak")


@pytest.mark.parametrize("script", ["ab_fusion", "ab_uniformize", "bench_joint"])
def test_the_options_of_a_run_are_its_config_with_paths_as_strings(script) -> None:
    """ab_fusion, ab_uniformize and bench_joint each wrote ``vars(args)`` with paths as strings under
    ``"config"`` in a copy of their own: one ``options_of`` now, which leaves out the hidden options named."""
    harness = _import("_harness")
    args = argparse.Namespace(out=Path("/tmp/r.json"), previous=Path("/tmp/p"), sizes=[64], worker=["a", "1"])
    assert harness.options_of(args) == {
        "out": "/tmp/r.json",
        "previous": "/tmp/p",
        "sizes": [64],
        "worker": ["a", "1"],
    }
    assert harness.options_of(args, leave_out=["worker"]) == {
        "out": "/tmp/r.json",
        "previous": "/tmp/p",
        "sizes": [64],
    }
    source = (BENCH / f"{script}.py").read_text()
    assert "options_of(args" in source and "vars(args)" not in source


def test_result_path_is_out_else_none_for_a_smoke_run_else_the_default(capsys) -> None:
    """The rule of the scripts with ``--quick`` (bench_ops, bench_overhead, bench_soft,
    bench_transparent_init, bench_uniformize), written once: ``--out`` when given, no file for a smoke run,
    the default otherwise."""
    atomic = _import("_atomic")
    default, given = Path("results/soft_20261202-1530.json"), Path("/tmp/s.json")
    assert atomic.result_path(given, default, quick=True) == given
    assert atomic.result_path(given, default, quick=False) == given
    assert atomic.result_path(None, default, quick=False) == default
    assert capsys.readouterr().out == ""
    assert atomic.result_path(None, default, quick=True) is None
    assert capsys.readouterr().out == "--quick: no JSON written (pass --out)\n"
    for script in ("bench_ops", "bench_overhead", "bench_soft", "bench_transparent_init", "bench_uniformize"):
        assert "result_path(" in (BENCH / f"{script}.py").read_text(), script


def test_bench_soft_quick_without_out_says_it_writes_no_file(capsys) -> None:
    """bench_soft's smoke run wrote no file without ``--out``, as documented, but said nothing about it (the
    other scripts print a line): the same line now."""
    before = sorted(p.name for p in (BENCH / "results").iterdir())
    _import("bench_soft").main(["--quick", "--in-process", "--repeats", "1", "--threads", "1"])
    assert "--quick: no JSON written (pass --out)\n" in capsys.readouterr().out
    assert sorted(p.name for p in (BENCH / "results").iterdir()) == before


@pytest.mark.parametrize("script", ["bench_ops", "bench_uniformize"])
def test_the_help_names_the_thread_count_part_of_the_default_file_name(script, monkeypatch) -> None:
    """bench_ops and bench_uniformize name a run's file ``<stem>_<N>thread_<stamp>.json`` for ``--threads N``
    other than 2 (the committed ``bench_uniformize_cpu_1thread.json``); their ``--help`` named only
    ``<stem>_<stamp>.json``."""
    bench = _import(script)
    text = "".join(bench.build_parser().format_help().split())  # wrapped anywhere, "date-time" included
    assert f"{script}_<device>_<UTCdate-time>.json,with_<N>threadafter<device>for--threadsNotherthan2" in text
    source = (BENCH / f"{script}.py").read_text()
    assert 'threads = "" if args.threads == 2 else f"_{args.threads}thread"' in source


@pytest.mark.examples  # imports every script: bench_joint imports the example pipeline (torchvision)
def test_the_benchmarks_page_names_the_scripts_without_a_device_and_those_the_gpu_check_runs() -> None:
    """The benchmarks page said that every script takes ``--device cuda`` and that one command runs them all
    on a GPU; four scripts have no ``--device``, and ``gpu_check.py`` runs three of the benchmarks. The
    sentence now names both sets: they must match the scripts."""
    page = " ".join((ROOT / "docs" / "benchmarks.rst").read_text(encoding="utf-8").split())
    start = page.index("Every script but")
    sentence = page[start : page.index("below.", start)]
    scripts = sorted(
        p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.stem != "conftest"
    )
    without = [s for s in scripts if "--device" not in _import(s).build_parser()._option_string_actions]
    assert without == ["ab_fusion", "ab_uniformize", "bench_transparent_init", "op_coverage"]
    assert "``bench_transparent_init.py``, ``op_coverage.py`` and the A/B scripts (``ab_*.py``)" in sentence
    gpu_check = (BENCH / "gpu_check.py").read_text(encoding="utf-8")
    run = sorted(set(re.findall(r"\bbench_[a-z_]+\.py", gpu_check)))
    assert run == ["bench_joint.py", "bench_soft.py", "bench_uniformize.py"]
    assert all(f"``{name}``" in sentence for name in run)


def test_the_uniformize_benchmarks_medians_are_medians_for_an_even_count():
    """``bench_uniformize.py`` took ``median_upper`` (the upper of the two middle values) for every figure it
    calls a median, and the GPU check runs it with 10 repeats: its paired ratios were the 6th of 10. The
    harness's ``median`` is the median; no script keeps the upper middle."""
    harness = _import("_harness")
    assert harness.median([3.0, 1.0, 2.0]) == 2.0
    assert harness.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert not hasattr(harness, "median_upper")
    assert "median_upper" not in (BENCH / "bench_uniformize.py").read_text(encoding="utf-8")


def test_peak_memory_counts_memory_freed_inside_the_region():
    """The region's peak counts an allocation freed before ``extra_mib`` is read (the peak, not the resident
    size at the end)."""
    method, extra = _peak_in_a_fresh_process(
        "x = torch.ones(2**25); x.add_(1); del x  # 128 MiB inside the region, freed"
    )
    if method == "ru_maxrss":
        pytest.skip("this kernel refuses the peak reset (/proc/self/clear_refs)")
    assert method == "vmhwm_reset" and 120 < extra < 160


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="no peak reset on this system")
def test_peak_reset_that_did_not_take_is_reported_refused(monkeypatch):
    """A reset the kernel accepted without lowering the peak (``VmHWM`` still well above ``VmRSS``) is
    refused: the growth would otherwise be measured from a stale peak."""
    harness = _import("_harness")
    kib = {"VmHWM": 500_000, "VmRSS": 100_000}
    monkeypatch.setattr(harness, "_proc_status_kib", lambda field: kib[field])
    assert harness._reset_peak_rss() is False
    kib["VmHWM"] = 100_512  # within the 1 MiB slack: taken
    assert harness._reset_peak_rss() is True


def test_check_counts_refuses_one_above_the_largest_shape():
    """``SHAPE_MAX`` is the largest value accepted: ``--batch-size 1024`` runs, 1025 is refused."""
    import argparse

    harness = _import("_harness")
    top = harness.SHAPE_MAX["batch_size"]
    harness.check_counts(argparse.ArgumentParser(), argparse.Namespace(batch_size=top), {"batch_size": 1})
    with pytest.raises(SystemExit):
        harness.check_counts(
            argparse.ArgumentParser(), argparse.Namespace(batch_size=top + 1), {"batch_size": 1}
        )


def test_check_counts_takes_threads_up_to_threads_max(capsys):
    """``THREADS_MAX`` is the largest ``--threads`` accepted: 1024 runs, 1025 is refused."""
    import argparse

    harness = _import("_harness")
    top = harness.THREADS_MAX
    harness.check_counts(argparse.ArgumentParser(), argparse.Namespace(threads=top), {"threads": 1})
    with pytest.raises(SystemExit):
        harness.check_counts(argparse.ArgumentParser(), argparse.Namespace(threads=top + 1), {"threads": 1})
    assert f"--threads must be in [1, {top}], got {top + 1}" in capsys.readouterr().err


def test_check_lists_refuses_an_empty_list(capsys):
    """``--ops ''`` (an unset shell variable) is refused, naming the option, not read as the default (every
    name); an option not given (``None``) is no error."""
    import argparse

    harness = _import("_harness")
    harness.check_lists(argparse.ArgumentParser(), argparse.Namespace(ops=None), ["ops"])
    with pytest.raises(SystemExit) as exc:
        harness.check_lists(
            argparse.ArgumentParser(), argparse.Namespace(num_superpixels=""), ["num_superpixels"]
        )
    assert exc.value.code == 2
    assert "--num-superpixels: expected a comma-separated list, got ''" in capsys.readouterr().err


def test_environment_records_the_threads_a_run_asked_for():
    """``environment(device, threads)`` records the ``--threads`` given (a worker's count), torch's own
    count only without it (the suite runs with one thread, where the two agreed)."""
    harness = _import("_harness")
    assert harness.environment("cpu", threads=97)["threads"] == 97
    assert harness.environment("cpu")["threads"] == torch.get_num_threads()


def test_cpu_model_is_the_first_processors_model_and_vector_extensions(monkeypatch):
    """``/proc/cpuinfo`` ends in a blank line: the model is read from the first processor's block (the last
    "block" is empty), with the vector extensions among its flags."""
    import io

    harness = _import("_harness")
    block = "processor\t: {}\nmodel name\t: Fake CPU 9000\nflags\t\t: fpu avx2 sse avx512f\n\n"
    info = block.format(0) + block.format(1)
    monkeypatch.setattr(harness, "open", lambda *a, **kw: io.StringIO(info), raising=False)
    assert harness.cpu_model() == "Fake CPU 9000 (avx2, avx512f)"
    # the family and model numbers, where the CPU reports them: one name can cover several generations
    numbered = "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: avx2\n\n"
    monkeypatch.setattr(harness, "open", lambda *a, **kw: io.StringIO(numbered), raising=False)
    assert harness.cpu_model() == "AMD EPYC (family 26, model 2; avx2)"
    bare = "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Fake CPU\nflags\t\t: fpu\n\n"
    monkeypatch.setattr(harness, "open", lambda *a, **kw: io.StringIO(bare), raising=False)
    assert harness.cpu_model() == "Fake CPU (family 6, model 143)"


def test_cli_device_refuses_the_cuda_index_one_past_the_last(monkeypatch, capsys):
    """With one CUDA device, ``cuda:0`` is accepted and ``cuda:1`` refused (indices start at 0)."""
    import argparse

    harness = _import("_harness")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert harness.cli_device(argparse.ArgumentParser(), "cuda:0") == torch.device("cuda:0")
    for index in (1, 256, 4096):  # torch wraps an index above 127 ("cuda:4096" is cuda:0)
        with pytest.raises(SystemExit):
            harness.cli_device(argparse.ArgumentParser(), f"cuda:{index}")
        assert f"--device cuda:{index}: this machine has 1 CUDA device" in capsys.readouterr().err


def test_run_script_takes_a_boolean_result_for_a_result_not_a_status():
    """``main()`` returning ``True`` or ``False`` (a result, not an ``int`` status) exits 0."""
    harness = _import("_harness")
    assert harness.run_script(lambda: True, "bench_demo.py") == 0
    assert harness.run_script(lambda: False, "bench_demo.py") == 0


def test_warmup_runs_one_on_the_cpu_three_on_cuda():
    """One untimed run before timing on the CPU (first-call costs), three on CUDA (autotuning, allocator)."""
    harness = _import("_harness")
    assert harness.warmup_runs(torch.device("cpu")) == 1
    assert harness.warmup_runs(torch.device("cuda")) == 3


def test_ab_fusion_params_are_the_stack_s_plus_a_seeded_perturbation():
    """``make_params`` moves every weight and bias off the transparent stack's (a stack near the identity
    would hide a wrong gradient term), by the same ``0.01 * randn`` on every call, as float32 leaves that
    require grad."""
    from examples.voc_joint.models.joint import FusionStack

    ab = _import("ab_fusion")
    stack = FusionStack(3, [6, 8], "relu", "transparent", generator=0)
    (ws, bs), (ws2, bs2) = ab.make_params(stack), ab.make_params(stack)
    for m, w, w2 in zip(stack.convs, ws, ws2, strict=True):
        diff = (w.detach() - m.weight.detach().flatten(1)).abs()
        assert w.dtype == torch.float32 and w.requires_grad and w.is_leaf and torch.equal(w, w2)
        assert 0 < float(diff.max()) < 0.1 and float(diff.min()) >= 0
        assert int((diff > 0).sum()) > diff.numel() // 2
    for m, b, b2 in zip(stack.convs, bs, bs2, strict=True):
        assert (b is None) == (m.bias is None)
        if b is not None:
            assert torch.equal(b, b2) and not torch.equal(b, m.bias.detach().float())


def test_uniformize_parts_times_every_part_and_the_library_op(tmp_path):
    """``bench_uniformize_parts.py`` (the evidence for the GPU uniformization target) runs on the CPU at its
    small shape and writes every part for both grids, each a positive time."""
    parts_script = _import("bench_uniformize_parts")
    out = tmp_path / "parts.json"
    result = parts_script.main(["--repeats", "1", "--no-compile", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["parts"] == result["parts"]
    assert data["shape"] == [1, 3, 64, 64]
    assert set(data["parts"]) == {"cell16", "cell8"}
    assert data["parts"]["cell8"]["N_s"] == 64
    for grid in data["parts"].values():
        ms = grid["ms"]
        assert {"floor x * 1, forward+backward", "library uniformize, forward+backward"} <= set(ms)
        assert "plain mean under torch.compile" not in ms  # --no-compile
        assert len(ms) == 15 - 1 and all(v > 0 for v in ms.values())


def test_peak_memory_on_cuda_is_the_allocator_peak_above_the_start_in_mib(monkeypatch):
    """On CUDA the figure is ``max_memory_allocated`` minus the memory allocated at the start, in MiB (2**20
    bytes, as ``peak_cuda_extra_mib`` says), under its own key; no GPU needed (the allocator is faked)."""
    harness = _import("_harness")
    allocated = {"now": 5 * 2**20, "peak": 5 * 2**20}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    memory = harness.PeakMemory("cuda")
    allocated["peak"] += 3 * 2**20  # 3 MiB above the start
    assert memory.method == "cuda_allocator" and memory.extra_mib() == 3.0, memory.extra_mib()
    assert harness.memory_fields(memory, fresh_process=True) == {"peak_cuda_extra_mib": 3.0}


def test_time_ms_on_cuda_is_the_events_milliseconds_of_each_run_after_a_sync(monkeypatch):
    """On CUDA each timed run is the ``elapsed_time`` (milliseconds) of two events recorded around ``fn``
    after a synchronisation, the warm-up runs untimed; no GPU needed (the events are faked)."""
    from types import SimpleNamespace

    harness = _import("_harness")
    calls: list[str] = []
    elapsed = iter([2.0, 4.0, 6.0])

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing

        def record(self, stream: object) -> None:
            calls.append("record")

        def synchronize(self) -> None:
            calls.append("wait")

        def elapsed_time(self, end: object) -> float:
            return next(elapsed)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: SimpleNamespace())
    monkeypatch.setattr(torch.cuda, "Event", Event)
    times = harness.time_ms(lambda: calls.append("fn"), 3, warmup=2, device="cuda")
    assert times == [2.0, 4.0, 6.0], (
        f"CUDA event times must be kept in ms as elapsed_time gives them: {times}"
    )
    assert calls == ["fn", "fn", *["sync", "record", "fn", "record", "wait"] * 3], calls


def test_environment_records_the_cuda_memory_in_gib(monkeypatch):
    """``cuda_memory_gib`` is the device's memory in GiB (2**30 bytes): an 80 GiB card reads 80.0, not the
    85.9 of GB."""
    from types import SimpleNamespace

    harness = _import("_harness")
    props = SimpleNamespace(name="Fake GPU", major=9, minor=0, total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    env = harness.environment("cuda", threads=1)
    assert env["cuda_memory_gib"] == 80.0, env["cuda_memory_gib"]
    assert (env["cuda_device"], env["cuda_capability"]) == ("Fake GPU", "9.0")


def test_environment_time_is_utc(monkeypatch):
    """The result file's ``time`` is labelled UTC: it is read from ``time.gmtime``, not the local clock."""
    harness = _import("_harness")
    utc = time.struct_time((2026, 12, 2, 15, 30, 0, 2, 336, 0))
    local = time.struct_time((2026, 12, 2, 16, 30, 0, 2, 336, 0))
    monkeypatch.setattr(time, "gmtime", lambda *args: utc)
    monkeypatch.setattr(time, "localtime", lambda *args: local)
    assert harness.environment("cpu")["time"] == "2026-12-02 15:30 UTC"


def test_a_zero_figure_is_a_figure_not_a_missing_one():
    """A memory figure of 0.0 MiB (an op that allocates nothing) is printed and read as 0.0, not as the
    ``nan`` / ``None`` of a missing figure."""
    harness = _import("_harness")
    assert harness.cell(0.0, ">6.1f") == "   0.0", harness.cell(0.0, ">6.1f")
    assert harness.peak_mib({"peak_cuda_extra_mib": 0.0, "peak_tensor_mib": 5.0}) == 0.0
    assert harness.peak_mib({"peak_rss_growth_mib": 9.0, "peak_tensor_mib": 0.0}) == 0.0


def test_peak_memory_after_a_reset_counts_from_the_resident_set_in_mib(monkeypatch):
    """After the peak reset the growth is ``VmHWM`` minus the ``VmRSS`` at the start, KiB to MiB by 1024 (a
    reset that took may leave ``VmHWM`` up to 1 MiB above ``VmRSS``: that slack is not the region's)."""
    harness = _import("_harness")
    kib = {"VmHWM": 100_512, "VmRSS": 100_000}
    monkeypatch.setattr(harness, "_reset_peak_rss", lambda: True)
    monkeypatch.setattr(harness, "_proc_status_kib", lambda field: kib[field])
    memory = harness.PeakMemory("cpu")
    kib["VmHWM"] = 100_000 + 2048
    assert memory.method == "vmhwm_reset" and memory.extra_mib() == 2.0, memory.extra_mib()


def test_tensor_peak_is_the_bytes_live_at_once_not_the_bytes_allocated():
    """Three 1 MiB buffers, each freed before the next is made: the tensor peak is 1 MiB (live at once), not
    the 3 MiB allocated in all."""
    harness = _import("_harness")

    def one_at_a_time() -> None:
        for _ in range(3):
            torch.empty(2**18)  # 1 MiB of float32, freed at once

    peak = harness.tensor_peak_mib(one_at_a_time)
    assert peak == pytest.approx(1.0, abs=2**-10), f"expected the 1 MiB live at once, got {peak} MiB"


def test_check_counts_refuses_an_infinite_float(capsys):
    """A float option (``bench_uniformize.py``'s ``--dense-max-gb``) of ``inf`` is refused like ``nan``: a
    non-finite bound is no bound (every dense variant would run, whatever its size)."""
    harness = _import("_harness")
    for value in (float("inf"), float("nan")):
        with pytest.raises(SystemExit):
            harness.check_counts(
                argparse.ArgumentParser(), argparse.Namespace(dense_max_gb=value), {"dense_max_gb": 0}
            )
        assert f"--dense-max-gb must be >= 0, got {value}" in capsys.readouterr().err


def test_op_counter_counts_a_syncing_op_among_the_ops_and_each_sync_by_name():
    """A syncing op is an op too (``ops`` counts every dispatched aten op), and ``sync_names`` counts each
    sync: two ``.item()`` calls are two ``_local_scalar_dense`` syncs, not one."""
    counting = _import("_counting")
    x = torch.arange(6.0)
    with counting.OpCounter().active() as counter:
        torch.equal(x, x)
    assert (counter.ops, counter.syncs) == (1, 1), (counter.ops, counter.syncs)
    with counting.OpCounter().active() as counter:
        x.sum().item()
        x.max().item()
    assert counter.syncs == 2 and dict(counter.sync_names) == {"aten._local_scalar_dense": 2}, dict(
        counter.sync_names
    )


def test_checkout_first_moves_this_checkout_before_another_one(monkeypatch):
    """This checkout already on ``sys.path`` but after another one (an editable install behind a
    ``PYTHONPATH`` entry) is moved to the front, once: its ``examples`` package is the one imported."""
    atomic = _import("_atomic")
    monkeypatch.setattr(sys, "path", ["/elsewhere/other-checkout", atomic._ROOT, "/usr/lib/python3"])
    atomic.checkout_first()
    assert sys.path == [atomic._ROOT, "/elsewhere/other-checkout", "/usr/lib/python3"], sys.path


@pytest.mark.examples
def test_bench_joint_fusion_flops_of_a_one_hidden_layer_stack_match_its_step():
    """``--fusion-hidden 64`` (42 -> 128 -> 21) with recomputation: the step's FLOPs with the stack minus
    those without it are ``fusion_flops`` too; with one hidden layer below the last, the first layer's
    U half is not run once more per superpixel."""
    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(
        ["--threads", "1", "--size", "16", "--fusion-hidden", "64", "--recompute-fusion"]
    )
    args.channels_last = False
    opts = bench.default_options(args)
    cpu = torch.device("cpu")
    (model, with_step), (_, without_step) = (
        bench.make_step(v, args, cpu, opts) for v in ("joint_hard_ti", "joint_hard_noti")
    )
    assert len(model.fusion.convs) == 2 and model.recompute_fusion
    with_stack, without = bench.step_flops(with_step, opts), bench.step_flops(without_step, opts)
    superpixels = args.batch_size * bench.num_grid_cells(16, 16, args.cell_size)
    assert with_stack - without == bench.fusion_flops(model, args.batch_size * 16 * 16, cpu, superpixels) > 0


@pytest.mark.examples
def test_bench_joint_breakdown_loss_part_is_the_cross_entropy_and_the_spixel_loss(monkeypatch):
    """The breakdown's ``loss`` part is the step's loss: cross-entropy + ``spixel_loss`` (the joint
    variants' loss), on the SpixelFCN output of the step; leaving the superpixel loss out made the part
    cheaper than the step's loss."""
    bench = _import("bench_joint")
    args = bench.build_parser().parse_args(
        ["--threads", "1", "--size", "16", "--rounds", "1", "--warmup", "0"]
    )
    args.channels_last = bench.DEFAULT_CHANNELS_LAST.get("cpu", False)
    opts = bench.default_options(args)
    model = bench.build_model("joint_hard_ti", args, torch.device("cpu"), opts)
    calls = []
    spixel_loss_of = bench.spixel_loss_of

    def recorded(assoc, *rest):
        calls.append(tuple(assoc.shape))
        return spixel_loss_of(assoc, *rest)

    monkeypatch.setattr(bench, "spixel_loss_of", recorded)
    monkeypatch.setattr(bench, "time_steps", lambda steps, *rest: {k: {"median_s": 1.0} for k in steps})
    bench.breakdown(args, torch.device("cpu"), opts, model)
    assert calls and all(shape[1] == 9 for shape in calls)  # SpixelFCN's association map, 9 neighbours


@pytest.mark.examples
def test_bench_joint_a_run_with_the_same_parts_as_the_entry_it_replaces_drops_none(
    tmp_path, monkeypatch, capsys
):
    """The replacement note names the parts of the earlier entry this run lacks, and only those: a second
    ``--formats`` run replacing a ``--formats`` entry drops nothing."""
    bench = _import("bench_joint")
    out = tmp_path / "joint.json"
    monkeypatch.setattr(bench, "measure_pair_set", lambda *rest: [])
    monkeypatch.setattr(bench, "format_study", lambda *rest: [{"network": "deeplab"}])
    argv = ["--variants", "deeplab", "--no-breakdown", "--formats", "--threads", "1", "--out", str(out)]
    bench.main(argv)
    capsys.readouterr()
    bench.main(argv)
    said = capsys.readouterr().out
    assert "it replaces the entry of " in said and "which also held" not in said


@pytest.mark.examples
def test_bench_joint_an_amp_run_on_cuda_has_its_own_entry_key():
    """The key is ``<device>_<backbone>_b<batch>_<size>[_amp]``: a CUDA run with AMP is written beside the
    float32 one, not over it."""
    bench = _import("bench_joint")
    p = bench.build_parser()
    args = p.parse_args(["--device", "cuda", "--amp"])
    assert bench.entry_key(p, args, torch.device("cuda"), True) == "cuda_resnet18_b2_128_amp"
    assert bench.entry_key(p, args, torch.device("cuda"), False) == "cuda_resnet18_b2_128"


def test_op_coverage_record_keeps_device_dtypes_runs_and_the_caller():
    """``Seen.dtypes`` holds the dtypes of an op's tensor arguments on the device only (a host op adds
    none); ``runs`` says ``<path> host|device``; ``where`` is ``autograd`` when no frame of the library
    called the op."""
    cov = _import("op_coverage")
    record = cov.Record()
    record.on = True
    half = torch.ones(2, dtype=torch.float16)
    record.add(torch.ops.aten.add.Tensor, (half, half), {}, False, set())
    record.path = "mps"
    record.add(torch.ops.aten.mul.Tensor, (half.double(), half.double()), {}, True, set())
    add, mul = record.ops["add.Tensor"], record.ops["mul.Tensor"]
    assert add.dtypes == {"float16"} and add.runs == {"cuda device"}
    assert mul.dtypes == set() and mul.runs == {"mps host"}
    assert add.where == mul.where == {"autograd"}


def test_op_coverage_where_names_the_package_module_and_function():
    """An op called by the library is attributed to ``<package>/<module>.py:<function>`` (the ``where``
    column of the committed table, e.g. ``sparse_ops/hard.py:hard_superpixels``)."""
    import sparse_ops as so

    cov = _import("op_coverage")
    record = cov.Record()
    with cov.DeviceRecorder(record):
        cov.run_case(record, "relabel", lambda: so.relabel_contiguous(torch.tensor([[[3, 7], [7, 3]]])))
    where = set().union(*(seen.where for seen in record.ops.values())) - {"autograd"}
    assert where, record.ops
    assert all(re.fullmatch(r"(sparse_ops|transparent_init)/\w+\.py:\w+", w) for w in where), where


def test_op_coverage_meta_only_records_the_ops_of_meta_tensors():
    """``DeviceRecorder(meta_only=True)`` (a stack built on ``meta``): the ops with a meta tensor are
    recorded, as device ops; the others are not."""
    cov = _import("op_coverage")
    record = cov.Record()
    meta, cpu = torch.zeros(2, device="meta"), torch.zeros(2)
    record.on = True
    with cov.DeviceRecorder(record, meta_only=True):
        meta.add_(1)
        cpu.mul_(2)
    record.on = False
    assert "add_.Tensor" in record.ops and "mul_.Tensor" not in record.ops
    assert record.ops["add_.Tensor"].runs == {"cuda device"}


def test_op_coverage_variants_cover_every_documented_option():
    """Both ``validate`` values, both layouts, with and without a mask; the full run adds the large size and
    float16; the ``sparse`` backend on the ``cuda`` path only."""
    cov = _import("op_coverage")
    quick = list(cov.variants(True, "mps"))
    assert {v.validate for v in quick} == {True, False}
    assert {v.channels_last for v in quick} == {v.masked for v in quick} == {False, True}
    assert {v.backend for v in quick} == {"scatter"} and {v.dtype for v in quick} == {torch.float32}
    assert len(quick) == 8
    full = list(cov.variants(False, "cuda"))
    assert {v.dtype for v in full} == {torch.float32, torch.float16}
    assert {v.large for v in full} == {False, True} and {v.backend for v in full} == {"scatter", "sparse"}


def test_op_coverage_run_case_keeps_a_case_that_raised_under_its_name_and_label():
    cov = _import("op_coverage")
    record = cov.Record()

    def refused():
        raise ValueError("no half kernel\nsecond line")

    cov.run_case(record, "superpixel_pool sum", refused, "tiny float16")
    assert record.skipped == {"superpixel_pool sum [tiny float16]": "ValueError: no half kernel"}
    assert record.on is False


def test_op_coverage_table_status_only_for_device_ops_and_known_gaps_of_sparse_rows(tmp_path):
    """A row with a device run gets a kernel status for each backend and yaml (also when its other path runs
    it on the host); an op that only runs on the host gets ``-``; a sparse row (``mm [csr]``) shows the
    known gaps of its op (``mm``)."""
    cov = _import("op_coverage")
    path = tmp_path / "native_functions.yaml"
    path.write_text(_YAML)
    record = cov.Record()
    record.ops["cat"] = cov.Seen(runs={"cuda device", "mps host"})
    record.ops["gather"] = cov.Seen(runs={"mps host"})
    record.ops["mm [csr]"] = cov.Seen(runs={"cuda device"}, layouts={"csr"})
    rows = {row["op"]: row for row in cov.table(record, {"2.11": path})}
    assert (rows["cat"]["MPS 2.11"], rows["cat"]["CUDA 2.11"]) == ("NO", "yes")
    assert (rows["gather"]["MPS 2.11"], rows["gather"]["CUDA 2.11"]) == ("-", "-")
    assert rows["mm [csr]"]["known gaps"] == cov.KNOWN_GAPS["mm"]
    assert rows["cat"]["known gaps"] == ""


def test_op_coverage_status_follows_composites_more_than_one_level(tmp_path):
    """A composite whose recorded decomposition holds a composite without an MPS kernel below it is not
    ``yes`` on MPS: the decomposition is followed past the first level."""
    cov = _import("op_coverage")
    entries = _parsed_yaml(
        cov,
        tmp_path,
        "- func: outer(Tensor self) -> Tensor\n  dispatch:\n    CompositeExplicitAutograd: outer\n\n"
        "- func: inner(Tensor self) -> Tensor\n  dispatch:\n    CompositeExplicitAutograd: inner\n\n"
        "- func: leaf(Tensor self) -> Tensor\n  dispatch:\n    CPU, CUDA: leaf\n",
    )
    record = cov.Record()
    record.ops["outer"] = cov.Seen(children={"inner"})
    record.ops["inner"] = cov.Seen(children={"leaf"})
    assert cov.status(entries, record, "outer", "MPS") == "NO (CompositeExplicitAutograd into inner)"
    assert cov.status(entries, record, "outer", "CUDA") == "yes (CompositeExplicitAutograd)"


def test_op_coverage_status_follows_the_kernel_a_device_chooses(tmp_path):
    """``convolution_backward`` runs ``mps_convolution_backward`` on MPS (``BACKEND_CHOICE``), not the CPU's
    recorded decomposition: without that kernel it is ``NO`` there, whatever the decomposition."""
    cov = _import("op_coverage")
    entries = _parsed_yaml(
        cov,
        tmp_path,
        "- func: convolution_backward(Tensor grad_output) -> Tensor\n  dispatch:\n"
        "    CompositeExplicitAutograd: convolution_backward\n\n"
        "- func: cat(Tensor[] tensors, int dim=0) -> Tensor\n  dispatch:\n    CPU, CUDA, MPS: cat\n",
    )
    record = cov.Record()
    record.ops["convolution_backward"] = cov.Seen(children={"cat"})
    assert cov.status(entries, record, "convolution_backward", "MPS") == (
        "NO (CompositeExplicitAutograd into mps_convolution_backward)"
    )
    assert cov.status(entries, record, "convolution_backward", "CUDA") == "yes (CompositeExplicitAutograd)"


def test_op_coverage_gaps_lists_mps_device_ops_without_an_mps_kernel():
    """Only rows the ``mps`` path runs on the device, and only their ``MPS`` columns that say ``NO`` (a
    composite's ``NO (... into ...)`` included), named by their versions."""
    cov = _import("op_coverage")

    def row(op: str, runs_on: str, mps: tuple[str, str], cuda: tuple[str, str]) -> dict[str, str]:
        return {"op": op, "runs on": runs_on, "MPS 2.11": mps[0], "MPS 2.14": mps[1]} | {
            "CUDA 2.11": cuda[0],
            "CUDA 2.14": cuda[1],
        }

    rows = [
        row(
            "a", "cuda device, mps device", ("NO (CompositeExplicitAutograd into cat)", "yes"), ("yes", "yes")
        ),
        row("b", "cuda device, mps host", ("NO", "NO"), ("yes", "yes")),
        row("c", "cuda device, mps device", ("yes", "yes"), ("NO", "NO")),
    ]
    assert cov.gaps(rows) == ["a (2.11)"]


def test_op_coverage_yaml_must_name_a_file(tmp_path):
    """``--yaml VERSION=PATH`` of an existing file: a folder is refused as a usage error."""
    cov = _import("op_coverage")
    with pytest.raises(argparse.ArgumentTypeError, match="must be VERSION=PATH of an existing file"):
        cov.yaml_spec(f"2.11={tmp_path}")


def test_op_coverage_main_prints_the_cases_not_run_and_the_mps_gaps(monkeypatch, capsys):
    """The summary names every case that raised (``not run: <case> [<variant>]: <why>``) and every device op
    of the ``mps`` path without an MPS kernel."""
    cov = _import("op_coverage")
    record = cov.Record()
    record.ops["_to_sparse_csr [coo]"] = cov.Seen(runs={"mps device"}, layouts={"coo"})
    record.skipped["to_sparse [tiny float32]"] = "ValueError: refused"
    monkeypatch.setattr(cov, "record_all", lambda quick: record)
    rows = cov.main(["--quick"])  # (writes nothing without --out)
    out = capsys.readouterr().out
    assert [row["op"] for row in rows] == ["_to_sparse_csr [coo]"]
    assert "  not run: to_sparse [tiny float32]: ValueError: refused" in out
    assert "device ops without an MPS kernel: _to_sparse_csr [coo] (" in out


def test_bench_ops_check_refuses_outputs_of_another_number_without_a_traceback(monkeypatch):
    """An alternative with another number of outputs fails the float64 check (no ``max_rel_diff``) instead
    of raising."""
    import dataclasses

    bench = _import("bench_ops")
    case = bench.CASES["pool_sum"]

    def extra_output(inp):
        out = case.alt(inp)
        return out, out.sum().reshape(1)

    monkeypatch.setitem(bench.CASES, "pool_sum", dataclasses.replace(case, alt=extra_output))
    check = bench.check_case("pool_sum", bench.case_config("pool_sum", quick=True))
    assert check == {"kind": "float64", "passed": False, "max_rel_diff": None}


def test_bench_ops_check_passes_a_difference_equal_to_the_tolerance(monkeypatch):
    """The relative difference passes when it is *at most* ``CHECK_TOLERANCE`` (the module docstring and
    docs/benchmarks.rst)."""
    import dataclasses

    bench = _import("bench_ops")
    case = bench.CASES["pool_sum"]

    def doubled_gradient(inp):
        x = inp["x"]
        return bench.scatter_pool(2 * x - x.detach(), inp["sp"], inp["n"], "sum")  # rel. diff exactly 0.5

    monkeypatch.setitem(bench.CASES, "pool_sum", dataclasses.replace(case, alt=doubled_gradient))
    monkeypatch.setattr(bench, "CHECK_TOLERANCE", 0.5)
    check = bench.check_case("pool_sum", bench.case_config("pool_sum", quick=True))
    assert check["max_rel_diff"] == 0.5 and check["tolerance"] == 0.5 and check["passed"] is True


def test_bench_ops_check_tolerance_is_the_documented_one():
    """docs/benchmarks.rst gives the float64 check's bound: the constant the check uses."""
    bench = _import("bench_ops")
    text = " ".join((ROOT / "docs" / "benchmarks.rst").read_text(encoding="utf-8").split())
    assert f"relative difference at most {bench.CHECK_TOLERANCE:g})" in text


def test_bench_ops_slow_ops_time_half_the_repeats_at_least_3():
    bench = _import("bench_ops")
    assert bench.CASES["spixel_loss"].slow and not bench.CASES["pool_sum"].slow
    assert bench.case_repeats("spixel_loss", 10, quick=False) == 5
    assert bench.case_repeats("spixel_loss", 4, quick=False) == 3
    assert bench.case_repeats("pool_sum", 10, quick=False) == 10
    assert bench.case_repeats("spixel_loss", 2, quick=True) == 2  # --quick: as given


def test_bench_ops_worker_refuses_an_unknown_implementation(monkeypatch):
    bench = _import("bench_ops")
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    monkeypatch.setattr(bench, "paired_times", lambda a, b, n, device="cpu": ([1.0] * n, [1.0] * n))
    cfg = bench.case_config("relabel_contiguous", quick=True)
    with pytest.raises(ValueError, match="impl must be 'ours' or 'alternative', got 'theirs'"):
        bench.worker("relabel_contiguous", "theirs", cfg, 1, fresh_process=False)


def _fake_subprocess_run(monkeypatch, module, returncode=0, stdout="", stderr=""):
    """``module.subprocess.run`` faked for the worker tests: it records each command and answers with the
    status and output of ``reply`` (returned with the commands, to be changed between calls)."""
    calls: list[list[str]] = []
    reply = {"returncode": returncode, "stdout": stdout, "stderr": stderr}

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, **reply)

    monkeypatch.setattr(module.subprocess, "run", run)
    return calls, reply


def test_bench_ops_worker_subprocess_gets_the_threads_and_the_op_repeats(monkeypatch):
    """A worker subprocess runs with the run's ``--threads`` and the op's own repeat count (half for a slow
    op); a worker that fails is a row with ``failed`` (its last stderr line), not a traceback."""
    bench = _import("bench_ops")
    calls, _ = _fake_subprocess_run(monkeypatch, bench, 1, stderr="Traceback\nRuntimeError: boom\n")
    args = argparse.Namespace(in_process=False, device="cpu", threads=1, repeats=10)
    cfg = bench.case_config("spixel_loss", quick=False)
    repeats = bench.case_repeats("spixel_loss", args.repeats, quick=False)
    row = bench._run_worker(args, "spixel_loss", "ours", cfg, repeats)
    assert row == {"impl": "ours", "failed": ["RuntimeError: boom"]}
    (cmd,) = calls
    assert cmd[cmd.index("--threads") + 1] == "1" and cmd[cmd.index("--repeats") + 1] == "5"
    assert cmd[cmd.index("--device") + 1] == "cpu"
    assert cmd[cmd.index("--worker") + 1 :][:2] == ["spixel_loss", "ours"]


def test_bench_ops_a_failed_measurement_fails_the_run(monkeypatch, capsys):
    """A worker that failed: its op gets no ratio, the run says so and exits with an error."""
    bench = _import("bench_ops")
    monkeypatch.setattr(
        bench, "_run_worker", lambda args, name, impl, cfg, repeats: {"impl": impl, "failed": ["boom"]}
    )
    with pytest.raises(SystemExit, match="a check failed or a measurement did not finish"):
        bench.main(["--quick", "--threads", "1", "--ops", "relabel_contiguous"])
    out = capsys.readouterr().out
    assert "failed: [['boom'], ['boom']]" in out
    assert re.search(r"^relabel_contiguous +not timed$", out, re.M), out


def test_bench_ops_pool_alternatives_keep_empty_superpixels_at_zero_and_max_below_zero():
    """The pool alternatives, as documented: an empty superpixel stays 0 (mean: no 0 / 0), and the max does
    not count the zeros it starts from (``include_self=False``); they agree with the library."""
    from sparse_ops import superpixel_pool

    bench = _import("bench_ops")
    x = -1 - torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sp = torch.zeros(1, 3, 3, dtype=torch.long)
    sp[0, 0] = 2  # superpixel 1 is empty
    for reduce in ("mean", "sum", "max"):
        alt = bench.scatter_pool(x, sp, 3, reduce)
        assert torch.equal(alt[:, 1], torch.zeros(1, 2, dtype=x.dtype)), reduce
        assert torch.allclose(alt, superpixel_pool(x, sp, 3, reduce=reduce)), reduce


def test_bench_ops_global_average_alternative_skips_empty_superpixels():
    from sparse_ops import superpixel_global_average

    bench = _import("bench_ops")
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sp = torch.zeros(2, 4, 4, dtype=torch.long)
    sp[:, 2:] = 3  # superpixels 1 and 2 are empty
    alt = bench.scatter_global_average(x, sp, 4)
    assert torch.allclose(alt, superpixel_global_average(x, sp, 4))


def test_bench_ops_argmax_alternative_breaks_ties_as_the_library():
    """Equal scores: the alternative picks the candidate the library's tie rule picks (the centre first)."""
    from sparse_ops import hard_superpixels

    bench = _import("bench_ops")
    assoc = torch.full((1, 9, 32, 32), 1 / 9)
    assert torch.equal(bench.argmax_hard(assoc, 16), hard_superpixels(assoc, 16))


def test_op_coverage_run_case_records_the_backward_of_every_differentiable_output():
    """A case's backward ops are recorded too (phase ``bwd``), after its forward ones (phase ``fwd``); the
    gradient of ones that starts it is not recorded."""
    cov = _import("op_coverage")
    record = cov.Record()
    x = torch.randn(3, requires_grad=True)
    with cov.DeviceRecorder(record):
        cov.run_case(record, "square", lambda: (x * x, x.detach().sin()))
    assert record.ops["mul.Tensor"].phases == {"fwd", "bwd"}  # x * x, and its backward's grad * x
    assert record.ops["sin"].phases == {"fwd"}
    assert "ones_like" not in record.ops and x.grad is not None


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2.14.1+cpu", "2.14"), ("2.6.0.dev20241112+cpu", "2.6"), ("2.11.0", "2.11"), ("2.14", "2.14")],
)
def test_op_coverage_columns_are_named_by_major_minor_of_any_torch_version(version, expected):
    """The table's columns carry ``major.minor`` of the torch version, also for a nightly's
    ``2.6.0.devYYYYMMDD`` (it gave ``2.6.0``) and a bare ``2.14`` (it gave ``2``)."""
    assert _import("op_coverage")._version(version) == expected


# ------------------------------------------------------------------------------------------ bench_soft.py
def test_bench_soft_times_the_three_documented_formulations_by_name():
    """``block`` is the library, ``nine_shift`` the 9-shift baseline and ``scatter`` the index_add version:
    a name bound to another formulation passes the agreement check and times one formulation twice."""
    bench_soft = _import("bench_soft")
    impls = bench_soft.SOFT_IMPLS
    assert impls == {
        "block": bench_soft.block_uniformize,
        "nine_shift": bench_soft.nine_shift_uniformize,
        "scatter": bench_soft.scatter_uniformize,
    }


def test_bench_soft_refuses_an_implementation_with_a_wrong_feature_gradient(monkeypatch):
    """The agreement check compares the gradient w.r.t. the features too (not only the output and the
    association gradient): right values with a doubled feature gradient are caught."""
    bench_soft = _import("bench_soft")
    scatter = bench_soft.scatter_uniformize
    monkeypatch.setitem(bench_soft.SOFT_IMPLS, "scatter", lambda x, a, s: scatter(2 * x - x.detach(), a, s))
    assert bench_soft.check_agreement() > 1e-4


def test_bench_soft_refuses_a_segnet_unpooling_with_a_wrong_gradient_only(monkeypatch):
    """``check_unpool_agreement`` compares the gradients as well as the outputs: an unpooling with the right
    output and a doubled gradient disagrees."""
    bench_soft = _import("bench_soft")
    unpool = bench_soft.max_unpool2d
    monkeypatch.setattr(bench_soft, "max_unpool2d", lambda v, i, size: unpool(2 * v - v.detach(), i, size))
    assert bench_soft.check_unpool_agreement() is False


def test_bench_soft_unpool_worker_names_its_implementation_and_channels(monkeypatch):
    bench_soft = _import("bench_soft")
    monkeypatch.setattr(bench_soft, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    row = bench_soft.worker_unpool("nn.MaxUnpool2d", 1, 3, 8, 8, 2, fresh_process=False)
    assert row["impl"] == "nn.MaxUnpool2d" and row["C"] == 3 and row["times_ms"] == [1.0, 1.0]


def test_bench_soft_worker_subprocess_gets_the_device_and_threads(monkeypatch):
    """Each measuring subprocess runs on ``--device`` with ``--threads`` (here and in every worker)."""
    bench_soft = _import("bench_soft")
    seen, _ = _fake_subprocess_run(monkeypatch, bench_soft, stdout='{"impl": "block"}\n')
    args = argparse.Namespace(in_process=False, device="cuda:1", threads=3)
    assert bench_soft._run_worker(args, ["soft", "block", 1, 2, 16, 16, 8, 1]) == {"impl": "block"}
    (cmd,) = seen
    assert cmd[cmd.index("--device") + 1] == "cuda:1" and cmd[cmd.index("--threads") + 1] == "3"
    assert cmd[cmd.index("--worker") :] == ["--worker", "soft", "block", "1", "2", "16", "16", "8", "1"]


def _bench_soft_stubbed(monkeypatch):
    """bench_soft with its measurements replaced by a stub recording the worker parameters."""
    bench_soft = _import("bench_soft")
    calls = []

    def run_worker(args, params):
        calls.append(list(params))
        kind, *rest = params
        if kind == "unpool_paired":
            return {"paired_ratio_to_nn": 1.0, "repeats": rest[-1]}
        return {"impl": rest[0], "C": rest[2], "median_ms": 1.0}

    monkeypatch.setattr(bench_soft, "_run_worker", run_worker)
    return bench_soft, calls


def test_bench_soft_full_run_measures_the_documented_configuration(monkeypatch, tmp_path):
    """A full run (no --quick): B=4, 512x512, cell 16, C = 2, 21, 23, medians of 5; SegNet B=4, C=21, 256x256,
    50 runs each; the JSON says it was neither quick nor in-process, keeps the agreement measured and the
    thread count used."""
    bench_soft, calls = _bench_soft_stubbed(monkeypatch)
    torch.set_num_threads(3)
    data = bench_soft.main(["--threads", "1", "--out", str(tmp_path / "s.json")])
    soft = [c for c in calls if c[0] == "soft"]
    assert sorted({tuple(c[2:]) for c in soft}) == [(4, C, 512, 512, 16, 5) for C in (2, 21, 23)]
    assert sorted({tuple(c[2:]) for c in calls if c[0] == "unpool"}) == [(4, 21, 256, 256, 50)]
    assert [c for c in calls if c[0] == "unpool_paired"] == [["unpool_paired", 4, 21, 256, 256, 50]]
    assert data["quick"] is False and data["in_process"] is False
    assert {k: data["soft"][k] for k in ("B", "H", "W", "cell_size", "repeats")} == {
        "B": 4,
        "H": 512,
        "W": 512,
        "cell_size": 16,
        "repeats": 5,
    }
    assert {k: data["segnet_unpool"][k] for k in ("B", "C", "H", "W")} == {
        "B": 4,
        "C": 21,
        "H": 256,
        "W": 256,
    }
    assert data["soft"]["max_abs_diff_f64"] == bench_soft.check_agreement() > 0
    assert ", 1 threads" in data["machine"]
    assert json.loads((tmp_path / "s.json").read_text())["soft"]["repeats"] == 5


def test_bench_soft_quick_defaults_and_the_batch_size_given(monkeypatch):
    """--quick: B=1 and 2 repeats unless given; --batch-size sets B (with --quick too)."""
    bench_soft, calls = _bench_soft_stubbed(monkeypatch)
    data = bench_soft.main(["--quick", "--in-process", "--threads", "1"])
    assert data["soft"]["repeats"] == 2 and data["soft"]["B"] == data["segnet_unpool"]["B"] == 1
    assert {c[2] for c in calls if c[0] == "soft"} == {1} and {c[-1] for c in calls if c[0] == "soft"} == {2}
    calls.clear()
    data = bench_soft.main(["--quick", "--in-process", "--threads", "1", "--batch-size", "2"])
    assert data["soft"]["B"] == data["segnet_unpool"]["B"] == 2
    assert {c[2] for c in calls if c[0] == "soft"} == {2} and {c[2] for c in calls if c[0] == "unpool"} == {2}


# ------------------------------------------------------------------------------ bench_transparent_init.py
def test_bench_transparent_init_plain_stack_has_the_real_layers_of_the_transparent_stack():
    """``plain_stack`` is the same real layers as ``TransparentConv1x1(C, hidden, out, activation)``."""
    bench = _import("bench_transparent_init")

    def shapes(seq):
        return [(type(m).__name__, tuple(getattr(m, "weight", torch.empty(0)).shape)) for m in seq]

    for act, activation in ((True, "relu"), (False, None)):
        for out in (bench.C, bench.C // 2):
            ours = bench.TransparentConv1x1(
                bench.C,
                bench.HIDDEN,
                out,
                activation=activation,
                generator=0,
                target_weight=None if out == bench.C else bench.pair_mean(),
            )
            assert shapes(bench.plain_stack(act, out=out)) == shapes(ours.layers), (act, out)


def test_bench_transparent_init_inputs_are_uniform_in_minus_r_r_per_seed():
    bench = _import("bench_transparent_init")
    x = bench.inputs(10.0, 0, (4000,))
    assert x.dtype == torch.float32 and x.abs().max() <= 10.0
    assert x.min() < -9.9 and x.max() > 9.9 and abs(float(x.mean())) < 0.5
    assert not torch.equal(bench.inputs(1.0, 0, (64,)), bench.inputs(1.0, 1, (64,)))  # each seed its own draw


def test_bench_transparent_init_non_square_target_is_the_pairwise_channel_mean():
    bench = _import("bench_transparent_init")
    x = torch.randn(bench.C, 5)
    assert torch.allclose(bench.pair_mean() @ x, x.view(bench.C // 2, 2, 5).mean(1))


def test_bench_transparent_init_init_with_uses_the_named_method():
    bench = _import("bench_transparent_init")
    for method, init in (
        ("random", lambda s: bench.random_uniform_init_(s, generator=3)),
        ("xavier", lambda s: bench.xavier_init_(s, generator=3)),
        ("net2net", bench.net2net_identity_init_),
        ("ours", lambda s: bench.transparent_init_(s, generator=3)),
    ):
        torch.manual_seed(0)
        got = bench.init_with(method, bench.plain_stack(True), 3).state_dict()
        torch.manual_seed(0)
        want = init(bench.plain_stack(True)).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), method


def test_bench_transparent_init_table2_columns():
    """Table 2's columns: init rate (median, min over seeds) of the ReLU stack, recovery without and with
    ReLU; Net2Net identity recovers all without ReLU and about half with it (the docs' table)."""
    bench = _import("bench_transparent_init")
    shape = (1, bench.C, 4, 4)
    rows = bench.table2(3, shape)
    rates = [100 * bench.init_rate(bench.init_with("random", bench.plain_stack(True), s)) for s in range(3)]
    assert len(set(rates)) == 3
    assert rows["random"]["init_rate"] == statistics.median(rates)
    assert rows["random"]["init_rate_min"] == min(rates)
    assert rows["net2net"]["recovery_no_relu"] == 100.0 and 20.0 < rows["net2net"]["recovery_relu"] < 80.0
    assert rows["ours"]["non_square_recovery"] == 100.0


def test_bench_transparent_init_table3_rows():
    """Table 3: each case is its stack on inputs U[-r, r] (median and worst over seeds); the error grows with
    r; the depth rows use inputs U[-10, 10] and k layers (k = 3 is the 42-[64, 64]-42 ReLU stack)."""
    bench = _import("bench_transparent_init")
    shape = (1, bench.C, 8, 8)
    t3 = bench.table3(3, shape)
    for r in (1, 1000):
        errs = [
            bench.max_abs_error(
                bench.TransparentConv1x1(bench.C, bench.HIDDEN, activation=None, generator=s),
                bench.inputs(float(r), s, shape),
            )
            for s in range(3)
        ]
        assert t3["ours_none"][str(r)]["median"] == statistics.median(errs)
        assert t3["ours_none"][str(r)]["worst"] == max(errs)
    assert t3["ours_relu"]["1000"]["median"] > 10 * t3["ours_relu"]["1"]["median"]
    assert t3["depth_relu_range10"]["3"]["median"] == t3["ours_relu"]["10"]["median"]
    assert t3["depth_relu_range10"]["3"]["worst"] == t3["ours_relu"]["10"]["worst"]


def test_bench_transparent_init_authors_recipe_is_transparent_with_gaussian_hidden_draws():
    """The authors' recipe (the reference beside ours) reproduces its input, with hidden draws N(0, 1/h)."""
    bench = _import("bench_transparent_init")
    seq = bench.reference_recipe_(bench.plain_stack(True), 0)
    assert bench.max_abs_error(seq, bench.inputs(1.0, 0, (1, bench.C, 8, 8))) < 1e-4
    first = seq[0].weight.detach().flatten()
    assert 0.1 < float(first.std()) < 0.15  # 1 / sqrt(64) = 0.125


def test_bench_transparent_init_widths_grow_with_r_above_a_nonzero_floor():
    bench = _import("bench_transparent_init")
    tw = bench.widths(2, rows=64, max_width=42)
    assert list(tw) == ["42 relu", "matmul_floor_r1"]
    assert tw["42 relu"]["1000"]["median"] > 10 * tw["42 relu"]["1"]["median"]
    assert 0 < tw["matmul_floor_r1"]["42"]["median"] <= tw["matmul_floor_r1"]["42"]["worst"] < 1e-5


def test_bench_transparent_init_cost_reads_each_stack_from_its_own_timings(monkeypatch):
    """forward_ms / build_ms of the transparent stack and the plain nn.Sequential, and forward_ratio =
    transparent / plain, on a fake clock: a transparent forward takes 3 ms, a plain one 1 ms, building the
    transparent stack 5 ms and the plain one 2 ms."""
    bench = _import("bench_transparent_init")
    now = [0.0]
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    class Timed(bench.TransparentConv1x1):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            now[0] += 5e-3

        def forward(self, x):
            now[0] += 3e-3
            return super().forward(x)

    plain_stack = bench.plain_stack

    def timed_plain(*args, **kwargs):
        seq = plain_stack(*args, **kwargs)
        seq.register_forward_pre_hook(lambda m, i: now.__setitem__(0, now[0] + 1e-3))
        now[0] += 2e-3
        return seq

    monkeypatch.setattr(bench, "TransparentConv1x1", Timed)
    monkeypatch.setattr(bench, "plain_stack", timed_plain)
    res = bench.cost(3, (1, bench.C, 2, 2))
    assert res["forward_ms"] == pytest.approx({"transparent": 3.0, "plain_sequential": 1.0})
    assert res["forward_ratio"] == pytest.approx(3.0)
    assert res["build_ms"] == pytest.approx({"transparent": 5.0, "plain_sequential": 2.0})
    n = sum(p.numel() for p in bench.TransparentConv1x1(bench.C, bench.HIDDEN).parameters())
    assert res["memory_mib"]["num_parameters"] == n == 27434
    assert res["memory_mib"]["parameters_transparent"] == n * 4 / 2**20


def _bench_transparent_init_stubbed(monkeypatch):
    """bench_transparent_init with each table's arguments recorded and the table computed at a tiny size."""
    bench = _import("bench_transparent_init")
    calls = {}
    tiny = (1, bench.C, 2, 2)

    def recorded(name, tiny_call):
        def stub(*args):
            calls[name] = args
            return tiny_call()

        return stub

    table2, table3, widths, cost = bench.table2, bench.table3, bench.widths, bench.cost
    monkeypatch.setattr(bench, "table2", recorded("table2", lambda: table2(1, tiny)))
    monkeypatch.setattr(bench, "table3", recorded("table3", lambda: table3(1, tiny)))
    monkeypatch.setattr(bench, "widths", recorded("widths", lambda: widths(1, 4, 42)))
    monkeypatch.setattr(bench, "cost", recorded("cost", lambda: cost(1, tiny)))
    return bench, calls


def test_bench_transparent_init_full_and_quick_runs_use_their_sizes(monkeypatch, tmp_path):
    """A full run: inputs [4, 42, 64, 64], widths up to 1024 on 2048 vectors, 25 timing rounds; --quick:
    [1, 42, 32, 32], widths up to 256 on 256 vectors, 3 rounds on [2, 42, 64, 64]; exit status 0 both."""
    bench, calls = _bench_transparent_init_stubbed(monkeypatch)
    assert bench.main(["--seeds", "2", "--threads", "1", "--out", str(tmp_path / "full.json")]) == 0
    assert calls == {
        "table2": (2, (4, bench.C, 64, 64)),
        "table3": (2, (4, bench.C, 64, 64)),
        "widths": (2,),
        "cost": (25,),
    }
    assert json.loads((tmp_path / "full.json").read_text())["input_shape"] == [4, bench.C, 64, 64]
    calls.clear()
    assert bench.main(["--quick", "--seeds", "2", "--threads", "1", "--out", str(tmp_path / "q.json")]) == 0
    assert calls == {
        "table2": (2, (1, bench.C, 32, 32)),
        "table3": (2, (1, bench.C, 32, 32)),
        "widths": (2, 256, 256),
        "cost": (3, (2, bench.C, 64, 64)),
    }
    assert json.loads((tmp_path / "q.json").read_text())["input_shape"] == [1, bench.C, 32, 32]


def test_bench_transparent_init_quick_without_out_writes_nothing_and_succeeds(monkeypatch, tmp_path, capsys):
    bench, _ = _bench_transparent_init_stubbed(monkeypatch)
    monkeypatch.setattr(bench, "DEFAULT_OUT", tmp_path / "transparent_init.json")
    assert bench.main(["--quick", "--seeds", "1", "--threads", "1"]) == 0
    assert "--quick: no JSON written (pass --out)" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_harness_runs_after_the_benchmarks_folder_left_sys_path():
    """A script imported the way the tests import it (the folder on ``sys.path`` only while importing) still
    measures its tensor peak and runs through ``run_script``: ``_harness`` does not look ``_counting`` and
    ``_atomic`` up on ``sys.path`` at call time (it did, and tests of both failed when run alone)."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "import _harness\n"
        f"sys.path.remove({str(BENCH)!r})\n"
        "sys.modules.pop('_counting', None), sys.modules.pop('_atomic', None)\n"
        "peak = _harness.tensor_peak_mib(lambda: torch.ones(2**18))\n"
        "print(peak, _harness.run_script(lambda: 3, 'probe.py'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak, status = proc.stdout.split()
    assert float(peak) == pytest.approx(1.0) and status == "3"


def _tiny_cfg(**kw):
    return {"B": 1, "C": 2, "H": 8, "W": 8, "N_s": 4, "labels": "grid", "threads": 1, **kw}


def test_bench_uniformize_dense_budget_is_the_mask_bytes_and_runs_at_it_exactly():
    """``dense_bmm`` is skipped when its ``[B, N_s, N_p]`` float32 mask needs *more* than ``--dense-max-gb``
    (GB of 1e9 bytes): 1 x 4 x 64 x 4 bytes = 1.024e-6 GB here, which runs at that budget, not below it."""
    bench = _import("bench_uniformize")
    ran = bench.run_one(_tiny_cfg(), "dense_bmm", "cpu", 1, dense_max_gb=1.024e-6, fresh_process=False)
    assert "skipped" not in ran and ran["max_abs_err"] < 1e-5, ran
    skipped = bench.run_one(_tiny_cfg(), "dense_bmm", "cpu", 1, dense_max_gb=1.0e-6, fresh_process=False)
    assert "budget 1e-06 GB (--dense-max-gb)" in skipped["skipped"], skipped


def test_bench_uniformize_sparse_row_measures_the_sparse_backend(monkeypatch):
    """The ``sparse`` variant is ``SuperpixelAssignment(..., backend="sparse")`` (CSR matrices), not the
    default backend under another name; ``scatter`` is the scatter backend."""
    import sparse_ops

    bench = _import("bench_uniformize")
    built: list[str] = []
    real = sparse_ops.SuperpixelAssignment

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.backend)

    monkeypatch.setattr(sparse_ops, "SuperpixelAssignment", Spy)
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    for variant in ("sparse", "scatter"):
        built.clear()
        bench.run_one(_tiny_cfg(), variant, "cpu", 1, dense_max_gb=1.0, paired=False, fresh_process=False)
        assert built and built[0] == variant, (variant, built)


def test_bench_uniformize_alternatives_agree_with_the_op_on_empty_superpixels():
    """Every alternative computes the library's uniformization, forward and input gradient, also where some
    superpixels are empty (9x9 images, 16 grid cells of 3x3 pixels: one row and one column of cells hold no
    pixel): the dense mask's ``1 / count`` must not turn an empty superpixel into NaN."""
    bench = _import("bench_uniformize")
    cfg = _tiny_cfg(H=9, W=9, N_s=16)
    for variant in ("scatter", "sparse", "sparse_coo", "paper_coo", "dense_bmm"):
        res = bench.run_one(cfg, variant, "cpu", 1, dense_max_gb=1.0, paired=False, fresh_process=False)
        assert res["max_abs_err"] < 1e-5 and res["max_abs_err_grad"] < 1e-5, (variant, res)


def test_bench_uniformize_times_setup_and_phases_into_their_own_fields(monkeypatch):
    """setup / fwd / fwd+bwd each from its own timed function; the setup is timed for the variants that have
    one (``paper_coo`` rebuilds its matrices in every call: 0), with half the repeats (at least 3), and the
    slow variants' phases with half the repeats (at least 3)."""
    bench = _import("bench_uniformize")
    runs: dict[str, list[int]] = {}
    ms = {"setup": 1.0, "fwd": 2.0, "fwd_bwd": 5.0}

    def time_ms(fn, n, warmup=1, device="cpu"):
        runs.setdefault(fn.__name__, []).append(n)
        return [ms[fn.__name__]] * n

    monkeypatch.setattr(bench, "time_ms", time_ms)
    for variant, setup in (("dense_bmm", 1.0), ("sparse_coo", 1.0), ("scatter", 1.0), ("paper_coo", 0.0)):
        res = bench.run_one(
            _tiny_cfg(), variant, "cpu", 2, dense_max_gb=1.0, paired=False, fresh_process=False
        )
        assert (res["setup_ms"], res["fwd_ms"], res["fwd_bwd_ms"]) == (setup, 2.0, 5.0), (variant, res)
    assert runs["setup"] == [3, 3, 3]  # repeats 2: half is 1, at least 3
    runs.clear()
    for variant in ("dense_bmm", "scatter"):
        bench.run_one(_tiny_cfg(), variant, "cpu", 8, dense_max_gb=1.0, paired=False, fresh_process=False)
    assert runs["fwd"] == [4, 8] and runs["fwd_bwd"] == [4, 8], runs  # slow: half of 8


def test_bench_uniformize_tensor_peak_includes_the_setup():
    """On the CPU ``peak_tensor_mib`` spans one setup and a forward+backward: ``dense_bmm``'s one-hot mask
    (1 x 64 x 4096 float32 = 1 MiB) is in it."""
    bench = _import("bench_uniformize")
    cfg = _tiny_cfg(H=64, W=64, N_s=64)
    res = bench.run_one(cfg, "dense_bmm", "cpu", 1, dense_max_gb=1.0, fresh_process=False)
    assert res["peak_tensor_mib"] >= 1.0, res


def test_bench_uniformize_max_err_is_the_largest_deviation(monkeypatch):
    """``max_abs_err``: the largest |float32 output - float64 reference|, so one wrong pixel shows in full."""
    bench = _import("bench_uniformize")
    from sparse_ops import SuperpixelAssignment

    uniformize = SuperpixelAssignment.uniformize

    def one_pixel_off(self, x):
        y = uniformize(self, x)
        if x.dtype != torch.float32:
            return y
        bump = torch.zeros_like(y)
        bump.view(-1)[0] = 1e-3
        return y + bump

    monkeypatch.setattr(SuperpixelAssignment, "uniformize", one_pixel_off)
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    res = bench.run_one(_tiny_cfg(), "scatter", "cpu", 1, dense_max_gb=1.0, paired=False, fresh_process=False)
    assert res["max_abs_err"] == pytest.approx(1e-3, rel=1e-3), res


def test_bench_uniformize_sweep_without_grid_labels_has_no_flatness_figure(monkeypatch):
    bench = _import("bench_uniformize")
    monkeypatch.setattr(bench, "time_ms", lambda fn, n, warmup=1, device="cpu": [1.0] * n)
    sweep = bench.run_sweep([_tiny_cfg(labels="voronoi")], "cpu", 1)
    assert sweep["grid_max_over_min"] is None and len(sweep["rows"]) == 1


def test_bench_uniformize_voronoi_config_uses_the_first_given_n_s():
    bench = _import("bench_uniformize")
    cfgs = bench.configs(False, num_superpixels=[16, 64])
    assert [(c["N_s"], c["labels"]) for c in cfgs] == [(16, "grid"), (64, "grid"), (16, "voronoi")]


def test_bench_uniformize_config_name_is_height_by_width():
    bench = _import("bench_uniformize")
    assert bench.cfg_name(_tiny_cfg(H=32, W=24)) == "B1_C2_32x24_Ns4_grid"


def test_bench_uniformize_child_gets_the_options_and_a_failure_is_recorded(monkeypatch):
    """The fresh subprocess of a measurement gets the run's ``--repeats`` and ``--dense-max-gb``; a child
    that failed is recorded with the last line of its error, not read as a result."""
    bench = _import("bench_uniformize")
    calls, reply = _fake_subprocess_run(monkeypatch, bench, stdout='{"fwd_ms": 1.0}\n')
    args = SimpleNamespace(in_process=False, device="cpu", repeats=5, dense_max_gb=0.25)
    assert bench._measure(args, _tiny_cfg(), "dense_bmm") == {"fwd_ms": 1.0}
    (cmd,) = calls
    assert cmd[cmd.index("--repeats") + 1] == "5" and cmd[cmd.index("--dense-max-gb") + 1] == "0.25"
    reply.update(returncode=1, stdout="", stderr="Traceback\nRuntimeError: boom\n")
    assert bench._measure(args, _tiny_cfg(), "dense_bmm") == {"skipped": "failed: ['RuntimeError: boom']"}


_QUICK_ONE = ["--quick", "--threads", "1", "--no-voronoi", "--num-superpixels", "64", "--no-sweep"]


def test_bench_uniformize_in_process_has_no_resident_set_figure():
    """``--in-process``: CPU memory figures are not reported (the process's history moves them)."""
    bench = _import("bench_uniformize")
    data = bench.main([*_QUICK_ONE, "--in-process", "--variants", "floor", "--repeats", "1"])
    floor = data["configs"][0]["results"]["floor"]
    assert floor["peak_extra_mb"] is None and floor["peak_tensor_mib"] > 0, floor


def test_bench_uniformize_defaults_as_documented(monkeypatch):
    """``--repeats`` 7 by default; the CPU default variants are floor, scatter, sparse, paper_coo, dense_bmm
    and torch_scatter, in that order; every measurement gets the run's thread count."""
    bench = _import("bench_uniformize")
    assert bench.build_parser().parse_args([]).repeats == 7
    seen = []
    monkeypatch.setattr(
        bench,
        "_measure",
        lambda args, cfg, variant: seen.append((variant, cfg["threads"])) or {"skipped": "-"},
    )
    bench.main(_QUICK_ONE)
    assert seen == [
        (v, 1) for v in ("floor", "scatter", "sparse", "paper_coo", "dense_bmm", "torch_scatter")
    ], seen


def test_bench_uniformize_accepts_as_many_superpixels_as_pixels(capsys):
    """``--num-superpixels`` must be squares <= the pixels of an image: 16384 = 128 x 128 at ``--quick``."""
    bench = _import("bench_uniformize")
    p = bench.build_parser()
    bench.check_args(p, p.parse_args(["--quick", "--num-superpixels", "16384"]))
    with pytest.raises(SystemExit):
        bench.check_args(p, p.parse_args(["--quick", "--num-superpixels", "16641"]))  # 129 ** 2
    assert "--num-superpixels must be squares <= 16384" in capsys.readouterr().err


def test_bench_uniformize_error_tolerance_is_1e_5(monkeypatch):
    """A max err above 1e-5 (the documented ``ERROR_TOLERANCE``) ends the run, here 5e-5."""
    bench = _import("bench_uniformize")
    measured = {"setup_ms": 0.0, "fwd_ms": 1.0, "fwd_bwd_ms": 2.0, "peak_extra_mb": None, "max_abs_err": 5e-5}
    monkeypatch.setattr(bench, "_measure", lambda args, cfg, variant: dict(measured))
    with pytest.raises(SystemExit, match="max err above 1e-05"):
        bench.main([*_QUICK_ONE, "--variants", "scatter"])


def test_bench_uniformize_json_has_meta_configs_and_sweep(monkeypatch, tmp_path):
    bench = _import("bench_uniformize")
    row = {"setup_ms": 0.0, "fwd_ms": 1.0, "fwd_bwd_ms": 2.0, "peak_extra_mb": None}
    monkeypatch.setattr(bench, "_measure", lambda args, cfg, variant: dict(row))
    monkeypatch.setattr(bench, "_sweep", lambda args, cfgs: {"skipped": "not here"})
    out = tmp_path / "u.json"
    argv = ["--quick", "--threads", "1", "--no-voronoi", "--num-superpixels", "64", "--repeats", "3"]
    bench.main([*argv, "--variants", "floor", "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "configs", "sweep"} and data["sweep"] == {"skipped": "not here"}
    assert data["meta"]["repeats"] == 3 and data["meta"]["in_process"] is False


def _parts_results(monkeypatch, shape=(2, 3, 16, 16), cells=(4,)):
    """Every part of ``measure_parts`` run once, its result kept by its row name (``time_ms`` faked: each
    "run" takes 1, 2 and 9 ms)."""
    parts_script = _import("bench_uniformize_parts")
    results = []

    def time_ms(fn, n, warmup=1, device="cpu"):
        results.append(fn())
        return [1.0, 2.0, 9.0]

    monkeypatch.setattr(parts_script, "time_ms", time_ms)
    torch.manual_seed(0)
    parts = parts_script.measure_parts(torch.device("cpu"), shape, cells, 3, compile_=False)
    ((_, grid),) = parts.items()
    return grid, dict(zip(grid["ms"], results, strict=True))


def test_uniformize_parts_alternatives_compute_the_superpixel_sums_and_mean(monkeypatch):
    """The primitives timed beside the library compute its pieces: the three sums agree (NCHW scatter, pixel
    rows index_add_, segment_reduce of the rows sorted by superpixel), and the plain mean is the library's
    uniformization; each row is the median of its runs."""
    grid, got = _parts_results(monkeypatch)
    assert set(grid["ms"].values()) == {2.0}  # the median of 1, 2 and 9 ms
    b, c, n_s = 2, 3, grid["N_s"]
    sums = got["sums: scatter_add_ [B, C, N]"]
    table = got["sums: index_add_ of pixel rows [B N, C]"]
    segments = got["sums: segment_reduce of sorted rows"]
    torch.testing.assert_close(table.view(b, n_s, c).permute(0, 2, 1), sums)
    torch.testing.assert_close(segments, table)
    library = got["library uniformize, forward"]
    torch.testing.assert_close(got["plain mean (scatter, multiply, gather)"].view_as(library), library)
    torch.testing.assert_close(got["library uniformize, forward, channels_last x"], library)


def test_uniformize_parts_main_compiles_only_in_a_full_run(monkeypatch, tmp_path):
    """``--quick``: no compile, 3 repeats, no JSON without ``--out``; a full run: compile (unless
    ``--no-compile``), 30 repeats, a JSON with the machine, shape, repeats and parts."""
    parts_script = _import("bench_uniformize_parts")
    used = []
    monkeypatch.setattr(
        parts_script, "measure_parts", lambda dev, shape, cells, n, compile_: used.append((n, compile_)) or {}
    )
    default = tmp_path / "default.json"
    monkeypatch.setattr(parts_script, "stamped_result", lambda stem: default)
    parts_script.main(["--quick"])
    assert not default.exists()
    out = tmp_path / "p.json"
    parts_script.main(["--out", str(out)])
    parts_script.main(["--no-compile", "--out", str(out)])
    assert used == [(3, False), (30, True), (30, False)]
    assert set(json.loads(out.read_text())) == {"machine", "shape", "repeats", "parts"}


def test_bench_overhead_sizes_are_the_documented_ones():
    """tiny: B=1, C=3, 8x8, 4 superpixels (cell 4); typical: B=2, C=21, 128x128, 225 superpixels (cell 9)."""
    bench = _import("bench_overhead")
    for name, shape, n_s, cell in (("tiny", (1, 3, 8, 8), 4, 4), ("typical", (2, 21, 128, 128), 225, 9)):
        inputs = bench.make_inputs(bench.SIZES[name], torch.device("cpu"))
        assert (tuple(inputs.x.shape), inputs.n_s, inputs.cell) == (shape, n_s, cell), name
        assert int(inputs.sp.max()) + 1 == n_s


def test_bench_overhead_measure_fills_each_field_from_its_own_count(monkeypatch):
    """KiB are 1024 bytes; the peak is the peak, the total the total; the backward's syncs are its own (a
    forward that reads a value on the host: one forward sync, none in the backward)."""
    bench = _import("bench_overhead")

    def allocations(fn):
        fn()
        return SimpleNamespace(count=3, total_bytes=4096, peak_bytes=2048)

    monkeypatch.setattr(bench, "allocations", allocations)
    leaf = torch.ones(4, requires_grad=True)
    row = bench.measure(lambda: leaf * float(leaf.detach().sum().item()), [leaf])
    assert (row["fwd_allocs"], row["fwd_kib"], row["fwd_peak_kib"]) == (3, 4.0, 2.0), row
    assert (row["bwd_allocs"], row["bwd_kib"], row["bwd_peak_kib"]) == (3, 4.0, 2.0), row
    assert (row["fwd_syncs"], row["bwd_syncs"]) == (1, 0), row


def test_bench_overhead_table_puts_each_figure_in_its_column():
    bench = _import("bench_overhead")
    row = {"op": "o", "size": "tiny", "validate": "True", "fwd_ops": 1, "bwd_ops": 2, "fwd_syncs": 3}
    row.update(bwd_syncs=4, fwd_allocs=5, fwd_kib=6.0, fwd_peak_kib=7.0, bwd_allocs=8)
    _, line = bench.format_table([row]).splitlines()
    assert line.split() == ["o", "tiny", "True", "1", "2", "3", "4", "5", "6.0", "7.0", "8", "-"]


def test_bench_overhead_main_sizes_json_and_threads(monkeypatch, tmp_path):
    """Both sizes by default (``--quick``: the tiny one, and no JSON without ``--out``); the JSON has the meta
    (with the sizes), the rows and the loops; ``--threads`` is torch's thread count for the run."""
    bench = _import("bench_overhead")
    monkeypatch.setattr(bench, "measure", lambda forward, leaves: {"fwd_ops": 1})
    default = tmp_path / "default.json"
    monkeypatch.setattr(bench, "stamped_result", lambda stem: default)
    quick = bench.main(["--quick", "--ops", "uniformize"])
    assert not default.exists() and list(quick["meta"]["sizes"]) == ["tiny"]
    out = tmp_path / "o.json"
    torch.set_num_threads(1)  # (the autouse fixture restores the count afterwards)
    bench.main(["--ops", "uniformize", "--threads", "2", "--out", str(out)])
    assert torch.get_num_threads() == 2
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "rows", "loops"} and list(data["loops"]) == ["tiny", "typical"]
    assert data["meta"]["sizes"] == bench.SIZES


def test_bench_overhead_a_batch_is_at_least_one_layout_block():
    bench = _import("bench_overhead")
    inputs = bench.make_inputs({"b": 3, "c": 2, "h": 8, "w": 8, "cell": 4}, torch.device("cpu"))
    (row,) = [r for r in bench.loops(inputs) if "build_layout" in r["where"]]
    assert row["trips"] == 1


def test_bench_overhead_refuses_zero_threads(capsys):
    """``--threads 0`` is a usage error naming the option, not a traceback of ``torch.set_num_threads(0)``."""
    with pytest.raises(SystemExit) as exc:
        _import("bench_overhead").main(["--threads", "0"])
    assert exc.value.code == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_ab_fusion_accepts_the_largest_size_and_hidden_width_its_messages_name():
    """``--sizes`` in [1, 16384] and ``--hidden`` in [2 C, 8192], as the refusals say: both ends included."""
    ab = _import("ab_fusion")
    ap = ab.build_parser()
    for argv in (["--sizes", "1", "16384"], ["--hidden", "42", "8192"]):
        ab.check_args(ap, ap.parse_args(["--previous", str(ROOT), *argv]))  # no SystemExit


def test_ab_fusion_refuses_a_fused_stack_that_is_not_callable(tmp_path, capsys):
    """A previous checkout whose ``fused_stack`` is not a function (not only ``None``) is a usage error."""
    ab = _import("ab_fusion")
    previous = _previous_checkout(tmp_path, "fused_stack = 1\n")
    with pytest.raises(SystemExit) as exc:
        ab.main(["--previous", str(previous)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "must define a callable fused_stack, got int" in err


def _fake_fusion_sides(calls):
    """Two fake ``fused_stack`` sides with the same output; the current one's gradient w.r.t. ``U`` is twice
    the previous one's. Each call's arguments are recorded in ``calls``."""

    def side(name, k):
        def fn(s, u, ws, bs, slope, *, chunk=None, recompute=False):
            calls.append((name, s, u, ws, bs, slope, chunk, recompute))
            w = ws[0].sum()
            return s * w + u.detach() + (u - u.detach()) * k  # forward s w + u on both sides

        return fn

    return {"previous": side("previous", 1.0), "current": side("current", 2.0)}


def test_ab_fusion_compare_names_the_tensor_whose_gradient_differs_and_feeds_both_sides_alike():
    """``compare`` runs both sides on the same ``S``, ``U``, weights, slope, chunk and ``recompute``; a side
    whose gradient w.r.t. ``U`` alone differs is reported as ``["U"]`` (not ``S``), with that difference."""
    ab = _import("ab_fusion")
    calls = []
    ws, bs = [torch.ones(2, 2, requires_grad=True)], [None]
    stack = SimpleNamespace(_slope=0.0, cpu_chunk_rows=7)
    args = argparse.Namespace(batch_size=1, channels=2, rounds=1)
    for recompute in (False, True):
        calls.clear()
        row = ab.compare(_fake_fusion_sides(calls), (ws, bs), stack, 4, recompute, args)
        assert row["bit_identical"] is False and row["not_identical"] == ["U"]
        assert row["max_abs_diff"] > 0 and row["recompute"] is recompute and row["size"] == 4
        prev = [c for c in calls if c[0] == "previous"]
        cur = [c for c in calls if c[0] == "current"]
        assert prev and cur
        for p, c in zip(prev, cur, strict=False):
            assert p[1] is c[1] and p[2] is c[2] and p[3] is c[3] and p[4] is c[4]  # the same tensors
            assert p[5:] == c[5:] == (0.0, 7, recompute)
        assert not torch.equal(prev[0][1], prev[0][2])  # S and U are two different draws


def test_ab_fusion_runs_without_an_activation_and_with_its_threads(monkeypatch, capsys):
    """``--activation none`` is a stack without activation (``FusionStack(..., None)``); the run uses
    ``--threads``; the table's columns are previous ms, then current ms, then the paired ratio; ``meta``
    records the stack's CPU chunk. (Timing faked: only the bookkeeping is checked.)"""
    from examples.voc_joint.models.joint import FusionStack

    ab = _import("ab_fusion")
    timed = {"previous_ms": 1.25, "current_ms": 2.5, "paired_ratio": 2.0}
    monkeypatch.setattr(ab, "paired_rounds", lambda sides, rounds: dict(timed))
    threads = []
    monkeypatch.setattr(ab, "environment", lambda device, n: threads.append(torch.get_num_threads()) or {})
    torch.set_num_threads(2)
    argv = ["--sizes", "4", "--hidden", "6", "--channels", "3", "--batch-size", "1", "--rounds", "1"]
    data = ab.main(["--previous", str(ROOT), *argv, "--threads", "1", "--activation", "none"])
    assert threads == [1]
    assert data["config"]["activation"] == "none" and all(r["bit_identical"] for r in data["rows"])
    assert data["meta"]["chunk"] == FusionStack(3, [6], None, "transparent", generator=0).cpu_chunk_rows
    table = capsys.readouterr().out.splitlines()[-2:]
    for line in table:
        size, _, previous_ms, current_ms, ratio, identical, _ = line.split()
        assert (size, previous_ms, current_ms, ratio, identical) == ("4", "1.25", "2.50", "2.000", "True")


def test_ab_fusion_writes_its_result_to_out(tmp_path, monkeypatch):
    """``--out`` gets the JSON of the returned result (timing faked)."""
    ab = _import("ab_fusion")
    monkeypatch.setattr(
        ab,
        "paired_rounds",
        lambda sides, rounds: {"previous_ms": 1.0, "current_ms": 1.0, "paired_ratio": 1.0},
    )
    out = tmp_path / "ab.json"
    data = ab.main(
        [
            "--previous",
            str(ROOT),
            "--sizes",
            "4",
            "--hidden",
            "6",
            "--channels",
            "3",
            "--batch-size",
            "1",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))


def test_ab_uniformize_accepts_a_grid_as_fine_as_the_image():
    """``--num-superpixels`` up to ``--size ** 2`` (one-pixel cells), as the refusal says."""
    ab = _import("ab_uniformize")
    ap = ab.build_parser()
    ab.check_args(ap, ap.parse_args(["--previous", str(ROOT), "--size", "4", "--num-superpixels", "1", "16"]))


def _fake_ab_uniformize_workers(tmp_path, monkeypatch, ratios=None):
    """A previous checkout under ``tmp_path`` and ``subprocess.run`` faked: each worker's command and
    environment are recorded; a worker reports ``ratios[(code, N_s)]`` (default 2.0) as its paired figure,
    after a line of other output."""
    ab = _import("ab_uniformize")
    previous = tmp_path / "previous"
    (previous / "sparse_ops").mkdir(parents=True)
    (previous / "sparse_ops" / "__init__.py").write_text("")
    seen = []
    real = ab.subprocess.run

    def run(cmd, **kwargs):
        if "--worker" not in cmd:  # not a worker (the environment's own probes)
            return real(cmd, **kwargs)
        root, n_s = cmd[cmd.index("--worker") + 1], int(cmd[cmd.index("--worker") + 2])
        seen.append((cmd, kwargs.get("env")))
        code = "previous" if Path(root) == previous.resolve() else "current"
        value = (ratios or {}).get((code, n_s), 2.0)
        measured = {"floor_ms": 1.0, "op_ms": value, "paired_x_floor": value}
        return SimpleNamespace(returncode=0, stdout="a warning\n" + json.dumps(measured) + "\n", stderr="")

    monkeypatch.setattr(ab.subprocess, "run", run)
    return ab, previous, seen


def test_ab_uniformize_runs_each_side_in_its_own_checkout_with_the_options_of_the_run(tmp_path, monkeypatch):
    """Each run labelled ``previous`` / ``current`` ran a worker on that checkout, with the run's options
    (rounds, size, threads, channels_last) and without PYTHONPATH (each worker picks its checkout); the
    worker's last stdout line is its result; ``config`` leaves the hidden ``--worker`` out."""
    ab, previous, seen = _fake_ab_uniformize_workers(tmp_path, monkeypatch)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    argv = [
        "--previous",
        str(previous),
        "--num-superpixels",
        "4",
        "--size",
        "8",
        "--repeats",
        "1",
        "--rounds",
        "3",
        "--threads",
        "1",
        "--channels-last",
    ]
    data = ab.main(argv)
    assert [r["code"] for r in data["runs"]] == ["previous", "current"]
    roots = {
        r["code"]: cmd[cmd.index("--worker") + 1] for r, (cmd, _) in zip(data["runs"], seen, strict=True)
    }
    assert roots == {"previous": str(previous.resolve()), "current": str(ab.ROOT)}
    for cmd, env in seen:
        assert {"--rounds=3", "--size=8", "--threads=1", "--channels-last"} <= set(cmd), cmd
        assert env is not None and "PYTHONPATH" not in env
    assert "worker" not in data["config"]


def test_ab_uniformize_stops_on_a_failed_worker_naming_it(tmp_path, monkeypatch):
    """A worker that fails stops the run with its side, ``N_s`` and stderr (not a JSON error)."""
    ab, previous, _ = _fake_ab_uniformize_workers(tmp_path, monkeypatch)
    real = ab.subprocess.run
    monkeypatch.setattr(
        ab.subprocess,
        "run",
        lambda cmd, **kw: (
            SimpleNamespace(returncode=1, stdout="", stderr="boom\n")
            if "--worker" in cmd
            else real(cmd, **kw)
        ),
    )
    with pytest.raises(SystemExit) as exc:
        ab.main(["--previous", str(previous), "--num-superpixels", "4", "--size", "8", "--repeats", "1"])
    assert str(exc.value) == "the previous worker failed (N_s=4):\nboom\n"


def test_ab_uniformize_table_puts_the_runs_of_each_side_in_its_column(tmp_path, monkeypatch, capsys):
    """The printed table: one row per ``N_s``, the previous code's paired figures, then the current code's,
    each that ``N_s``'s only."""
    ratios = {("previous", 4): 1.11, ("current", 4): 2.22, ("previous", 16): 3.33, ("current", 16): 4.44}
    ab, previous, _ = _fake_ab_uniformize_workers(tmp_path, monkeypatch, ratios)
    ab.main(["--previous", str(previous), "--num-superpixels", "4", "16", "--size", "8", "--repeats", "1"])
    table = capsys.readouterr().out.splitlines()[-2:]
    assert [line.split() for line in table] == [["4", "1.11", "2.22"], ["16", "3.33", "4.44"]]


def test_ab_uniformize_worker_uses_its_threads_and_memory_format(monkeypatch):
    """A worker sets ``--threads`` and hands the op an ``x`` in channels_last with ``--channels-last``."""
    import sparse_ops

    ab = _import("ab_uniformize")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the worker puts its checkout first
    formats = []
    real = sparse_ops.SuperpixelAssignment.uniformize

    def uniformize(self, x, *args, **kwargs):
        formats.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(sparse_ops.SuperpixelAssignment, "uniformize", uniformize)
    root = Path(sparse_ops.__file__).resolve().parents[1]
    torch.set_num_threads(2)
    argv = ["--previous", str(root), "--size", "8", "--batch-size", "1", "--channels", "2", "--rounds", "1"]
    ab.worker(root, 4, ab.build_parser().parse_args([*argv, "--threads", "1", "--channels-last"]))
    assert torch.get_num_threads() == 1
    assert formats and all(formats)
