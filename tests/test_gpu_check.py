"""The GPU check (``benchmarks/gpu_check.py``): its CPU dry run end to end, and its parts on fabricated input.

The dry run takes the code paths of the CUDA run on the CPU at tiny sizes; the unit tests cover what the dry
run cannot reach without a GPU: reading killed or failed pytest runs, time limits, the targets' verdicts, and
the CUDA branches of the timing harness (with a fake ``torch.cuda``). No test here asserts a timing.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# the timing harness reads peak memory with the POSIX resource module (the benchmarks run on Linux)
pytest.importorskip(
    "resource", reason="the benchmark harness needs the resource module (POSIX; not on Windows)"
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _import(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


gpu_check = _import("gpu_check")
harness = _import("_harness")
_atomic = _import("_atomic")


# ----------------------------------------------------------------------------------------------- dry run
@pytest.mark.slow
@pytest.mark.examples
def test_dry_run_takes_every_stage_and_writes_the_report(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "gpu_check.py"),
            "--device",
            "cpu",
            "--quick",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())
    summary = (tmp_path / "gpu_check_cpu_quick.txt").read_text()
    stages = report["stages"]
    assert list(stages) == list(gpu_check.STAGES)
    assert {name: st["status"] for name, st in stages.items()} == dict.fromkeys(gpu_check.STAGES, "ok")
    assert report["exit_status"] == 0 and report["on_gpu"] is False

    tests = stages["tests"]["summary"]  # the CUDA cases exist and are skipped cleanly on the CPU
    assert tests["skipped"] >= 1 and tests["failed"] == tests["errors"] == tests["passed"] == 0

    uni = stages["uniformize"]["summary"]
    assert uni["auto_backend"] in ("scatter", "sparse")
    assert [r["N_s"] for r in uni["rows"]] == [64, 256]
    for row in uni["rows"]:
        assert row["floor"]["fwd_bwd_ms"] > 0 and row["copy"]["fwd_bwd_ms"] > 0
        for variant in ("scatter", "sparse", "sparse_coo", "paper_coo", "dense_bmm"):
            assert row[variant]["max_abs_err"] < 1e-5, (row["name"], variant, row[variant])
        assert row["fastest_backend"] in ("scatter", "sparse")

    joint = stages["joint"]["summary"]
    assert joint["ratios"]["deeplab"] == pytest.approx(1.0)
    assert set(joint["ratios"]) >= {"joint_hard_ti", "joint_hard_noti", "joint_soft_ti"}
    assert set(joint["channels_last_ratios"]) == {"deeplab", "spixelfcn"}  # the memory-format study ran
    assert all(r > 0 for r in joint["channels_last_ratios"].values())

    assert stages["soft"]["summary"]["max_abs_diff_f64"] < 1e-10

    train = stages["train"]["summary"]
    assert [train["stages"][s]["steps"] for s in ("seg", "spixel", "joint")] == [2, 2, 2]
    assert set(train["transparency"]) == {"float32"}  # AMP is CUDA-only
    assert train["transparency"]["float32"]["relative"] < 1e-5  # the joint model is transparent at step 0

    assert [t["met"] for t in report["targets"]] == [None, None, None]  # no verdict without a GPU
    assert all(t["figure"] for t in report["targets"])
    assert "targets:" in summary and "not evaluated" in summary and "step-0 transparency" in summary
    assert "channels_last / NCHW step, each network alone" in summary


# ----------------------------------------------------------------------------------------------- refusals
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would really run")
def test_git_revision_says_when_the_files_are_not_the_commits(tmp_path):
    """A copy of a working tree can carry an older ``.git`` than its files (a GPU run of 2026-12-04 named a
    commit two behind the code it ran): the report then counts the tracked files that differ."""

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, timeout=30)

    assert gpu_check.git_revision(tmp_path) is None  # not a repository
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    git("add", "a.py", "b.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / "new.py").write_text("untracked files do not count\n")
    assert gpu_check.git_revision(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "b.py").unlink()
    assert gpu_check.git_revision(tmp_path) == f"{head}+2 changed"


def test_refuses_to_run_without_a_gpu(tmp_path, capsys):
    assert gpu_check.main(["--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu --quick" in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cpu"], "--device cpu --quick"),
        (["--device", "tpu", "--quick"], "--device must be cuda, cuda:N or cpu, got 'tpu'"),
        (["--stages", "uniformize,bogus"], "--stages: unknown ['bogus']"),
        # a NaN budget was accepted and meant no budget; a file as the results folder (--output-dir) ended in
        # a FileExistsError traceback
        (["--budget", "nan"], "--budget must be a finite number of seconds > 0, got nan"),
        (["--budget", "-5"], "--budget must be a finite number of seconds > 0, got -5.0"),
        (
            ["--budget", "5e-324"],
            "--budget must be at least 50 s (a stage's 30 s and the time to stop it), got 5e-324",
        ),
        (["--output-dir", __file__], "--output-dir must be a folder, got the file"),
        (["--stages", ","], "--stages names no stage"),  # ran nothing and exited 0
        (["--device", "cuda:-1"], "--device must be cuda, cuda:N or cpu, got 'cuda:-1'"),
        (["--device", "cuda: 0"], "--device must be cuda, cuda:N or cpu, got 'cuda: 0'"),
    ],
    ids=[
        "cpu-without-quick",
        "unknown-device",
        "unknown-stage",
        "nan-budget",
        "negative-budget",
        "budget-below-any-stage",
        "out-file",
        "no-stage",
        "negative-index",
        "blank-index",
    ],  # ids without "cuda": `-k cuda` on a GPU
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- stages
def test_run_command_records_failure_and_timeout(tmp_path):
    ok = gpu_check.run_command([sys.executable, "-c", "print('hello')"], 60, tmp_path / "ok.log", echo=False)
    assert (ok.status, ok.returncode, ok.error) == ("ok", 0, None)
    assert (tmp_path / "ok.log").read_text() == "hello\n"

    code = "import sys; print('step 1'); sys.exit('boom: bad input')"
    failed = gpu_check.run_command([sys.executable, "-c", code], 60, echo=False)
    assert failed.status == "failed" and failed.returncode == 1
    assert "exit status 1" in failed.error and "boom: bad input" in failed.error

    t0 = time.perf_counter()
    code = "import subprocess, sys, time; "
    code += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    code += "print('started', flush=True); time.sleep(60)"
    slow = gpu_check.run_command([sys.executable, "-c", code], 3, echo=False)
    assert slow.status == "timeout" and "time limit of 3 s" in slow.error
    assert "started" in slow.output
    assert time.perf_counter() - t0 < 30  # the process group (grandchild included) was killed


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups: POSIX")
def test_a_timeout_kills_a_child_that_outlives_the_stage_at_sigterm(tmp_path):
    """The train stage's own process dies at SIGTERM, while the ``train.py`` it started takes SIGTERM as a
    request to finish its step and save: the SIGKILL goes to the group while any process of it is left.
    Before, the child ran on past the stage (and the reader waited 10 s more for the pipe it held)."""
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, signal, sys, time; "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(60), sys.exit(143))); "
        "print('training', flush=True); time.sleep(60)"
    )
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    t0 = time.perf_counter()
    run = gpu_check.run_command([sys.executable, "-c", code], 2, echo=False)
    assert run.status == "timeout" and "training" in run.output
    assert time.perf_counter() - t0 < 2 + 8  # its limit and the 5 s grace, not the reader's 10 s more
    pid = int(pid_file.read_text())
    _assert_ends(pid, "after the stage, the stage's child")


def _assert_ends(pid: int, what: str, within: float = 5.0) -> None:
    """Wait up to ``within`` seconds for process ``pid`` to end; fail naming ``what`` it is otherwise."""
    deadline = time.monotonic() + within
    while not _gone(pid):
        assert time.monotonic() < deadline, f"{what} {pid} is still running"
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (an ended one its new parent has not reaped yet included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no /proc (not Linux): only the reaped end is seen
        return False


@pytest.mark.parametrize("limit", [60, 2], ids=["ends", "timeout"])
def test_run_command_closes_the_pipe_and_the_log(limit, tmp_path):
    """What ``run_command`` opens is closed when it returns: before, the stage's output pipe was left to the
    garbage collector (a ResourceWarning under ``python -X dev``, an error under ``-W error``)."""
    code = "import sys, time; print('hello', flush=True); time.sleep(float(sys.argv[1]))"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = gpu_check.run_command(
            [sys.executable, "-c", code, "0" if limit == 60 else "60"], limit, tmp_path / "log", echo=False
        )
        gc.collect()
    assert run.status == ("ok" if limit == 60 else "timeout") and "hello" in run.output
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_timeout_stops_the_stage_where_there_are_no_process_groups(monkeypatch):
    """Without ``os.killpg`` (Windows) a stage past its limit is terminated itself; before, the timeout
    raised AttributeError and left the stage running."""
    monkeypatch.delattr(gpu_check.os, "killpg")
    t0 = time.perf_counter()
    code = "import time; print('started', flush=True); time.sleep(60)"
    slow = gpu_check.run_command([sys.executable, "-c", code], 2, echo=False)
    assert slow.status == "timeout" and "started" in slow.output
    assert slow.returncode is not None and slow.returncode != 0  # it was stopped, not left running
    assert time.perf_counter() - t0 < 30


def test_missing_program_is_an_error_not_a_crash():
    run = gpu_check.run_command(["/nonexistent/python-for-gpu-check"], 5, echo=False)
    assert run.status == "error" and "could not start" in run.error


def test_stage_time_limits_keep_time_for_later_stages():
    assert gpu_check.stage_timeout(100, 400, later_stages=2) == 100
    assert gpu_check.stage_timeout(100, 120, later_stages=2) == 60  # 2 x 30 s kept back
    # too short to keep 30 s for each later stage: this one still gets 30 s, the later ones give way
    assert gpu_check.stage_timeout(100, 50, later_stages=2) == 30
    assert gpu_check.stage_timeout(100, 5, later_stages=2) == 5  # < SHORTEST_STAGE_S: not run
    assert gpu_check.stage_timeout(100, -3, later_stages=0) == 0


@pytest.mark.parametrize("later", [1, 2, 4])
def test_a_stages_limit_never_shrinks_as_the_budget_grows(later):
    """The first cut gave the later stages way only below 10 s: 120 s left gave the first stage (of five) its
    100 s where 130 s gave it 10 s (--budget 140 against 150, less the 20 s to stop a stage)."""
    limits = [gpu_check.stage_timeout(100, remaining / 2, later) for remaining in range(0, 1200)]
    assert all(a <= b for a, b in itertools.pairwise(limits))
    assert limits[-1] == 100 and min(lim for lim in limits if lim >= 30) == 30


def test_an_output_dir_below_a_file_is_refused_at_parse_time(tmp_path, capsys):
    """``--output-dir`` (then ``--out``) below a file ended the dry run with a ``NotADirectoryError``
    traceback (exit status 1) when the folder was made; it is refused with the benchmarks' message and status
    2 before anything runs."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--device", "cpu", "--quick", "--output-dir", str(blocker / "results")])
    assert exc.value.code == 2
    assert f"--output-dir '{blocker / 'results'}' lies below the file '{blocker}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--device", "cuda"], ["--device", "cpu", "--quick"]], ids=["cuda", "quick"]
)
def test_every_benchmark_stage_command_parses_with_its_script(argv, tmp_path):
    """The stages run the benchmarks with options of their own: a benchmark option renamed (``bench_joint.py
    --output``, now ``--out``) without the check's command would fail only on the GPU machine, after its
    start-up. Each stage that runs a benchmark script is parsed by that script's own parser here."""
    pytest.importorskip("torchvision")  # bench_joint.py builds the example's models
    from tests.test_doc_commands import load_script

    stages = gpu_check.build_stages(gpu_check.parse_args(argv), tmp_path)
    parsed = []
    for name, stage in stages.items():
        script = Path(stage.cmd[1])
        if script.parent != BENCH or script.name == "gpu_check.py":  # pytest; the check's own training run
            continue
        parser = load_script(script, f"_gpu_check_stage_{script.stem}").build_parser()
        parser.allow_abbrev = False  # spelled in full: a renamed option's old name may be a prefix of the new
        try:
            parser.parse_args(stage.cmd[2:])
        except SystemExit:
            pytest.fail(f"stage {name}: {script.name} refuses {stage.cmd[2:]}")
        parsed.append(name)
    assert {"uniformize", "joint", "soft"} <= set(parsed), parsed


def test_every_stage_command_targets_the_requested_device(tmp_path):
    args = gpu_check.parse_args(["--device", "cuda"])
    stages = gpu_check.build_stages(args, tmp_path)
    assert set(stages) == set(gpu_check.STAGES)
    for name in ("uniformize", "joint", "soft", "train"):
        cmd = stages[name].cmd
        assert cmd[cmd.index("--device") + 1] == "cuda", name
        assert "--quick" not in cmd, name
    uni = stages["uniformize"].cmd
    assert uni[uni.index("--batch-size") + 1] == "8"
    assert uni[uni.index("--num-superpixels") + 1] == "1024,4096,16384"
    joint = stages["joint"].cmd
    assert [joint[joint.index(k) + 1] for k in ("--backbone", "--batch-size", "--size")] == [
        "resnet101",
        "8",
        "512",
    ]
    assert ("--amp" in joint) == gpu_check._bench_joint_has_amp()
    assert stages["tests"].cmd[-1] == "tests" and "-k" in stages["tests"].cmd


def test_tests_stage_survives_a_module_that_cannot_be_imported(tmp_path):
    """A test module importing a package the GPU image lacks is one error in the counts, and the other CUDA
    tests still run (pytest stops after collection errors by default: no CUDA test would run at all)."""
    args = gpu_check.parse_args(["--device", "cuda"])
    cmd = gpu_check.build_stages(args, tmp_path)["tests"].cmd
    assert "--continue-on-collection-errors" in cmd
    # the flag's effect, on a throwaway tree: one importable CUDA test, one module that cannot be imported
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "test_ok.py").write_text("def test_fine_on_cuda():\n    pass\n")
    (tree / "test_broken.py").write_text("import no_such_package_on_the_gpu_image\n")
    i = cmd.index("-m", 1)  # the "-m pytest" of the command, not a marker expression
    flags = [c for c in cmd[i + 2 : -1] if not c.startswith("--junitxml")]
    junit = tmp_path / "junit.xml"
    run = gpu_check.run_command(
        [sys.executable, "-m", "pytest", *flags, f"--junitxml={junit}", "-c", "/dev/null", str(tree)],
        120,
        echo=False,
    )
    counts = gpu_check.parse_junit(junit)
    assert run.status == "failed" and counts["passed"] == 1 and counts["errors"] == 1, run.output[-2000:]


#: Packages of the project's extras and tools that the GPU image lacks (it has torch, torchvision, pytest,
#: hypothesis, scipy and scikit-image); tqdm is missing too, and the check's stand-in replaces it.
NOT_ON_THE_GPU_IMAGE = ("matplotlib", "torch_scatter", "tensorboard", "sphinx", "hatchling")


@pytest.mark.slow
@pytest.mark.examples
def test_gpu_tests_collect_without_the_packages_the_gpu_image_lacks(tmp_path, monkeypatch):
    """Every module the tests stage imports loads on the GPU image: ``pytest -k cuda tests`` collects without
    matplotlib & co., with the tqdm stand-in first on the path (as the check runs it). A test module importing
    one of them at its top would be a collection error on the GPU, found there only."""
    site = tmp_path / "site"
    site.mkdir()
    blocked = ", ".join(repr(name) for name in NOT_ON_THE_GPU_IMAGE)
    (site / "sitecustomize.py").write_text(
        f"import sys\n\nfor name in ({blocked},):\n    sys.modules[name] = None  # importing it raises\n"
    )
    monkeypatch.setattr(gpu_check, "_has_module", lambda name: False)
    stand_in = gpu_check.tqdm_stand_in(tmp_path)
    assert stand_in is not None
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-k", "cuda", "-p", "no:cacheprovider"]
    run = gpu_check.run_command([*cmd, "tests"], 300, echo=False, extra_path=[site, stand_in])
    assert run.status == "ok", run.output[-3000:]
    tail = run.output.strip().splitlines()[-1]
    assert "error" not in tail and int(tail.split("/")[0]) >= 100, tail  # "135/1934 tests collected (...)"
    probe = "import matplotlib" + "\n"
    probe_run = gpu_check.run_command([sys.executable, "-c", probe], 60, echo=False, extra_path=[site])
    assert probe_run.status == "failed" and "ModuleNotFoundError" in probe_run.output  # the block works


def test_dry_run_collects_the_tree_the_gpu_run_collects(tmp_path):
    """The CPU dry run imports every test module the CUDA run imports (``tests``, ``-k cuda``); it runs only
    the cases marked ``cuda``, which skip on the CPU."""

    def tests_cmd(*argv: str) -> list[str]:
        return gpu_check.build_stages(gpu_check.parse_args(list(argv)), tmp_path)["tests"].cmd

    cuda, quick = tests_cmd("--device", "cuda"), tests_cmd("--device", "cpu", "--quick")
    assert cuda[-1] == quick[-1] == "tests"
    assert [cuda[cuda.index("-k") + 1], quick[quick.index("-k") + 1]] == ["cuda", "cuda"]
    assert quick[quick.index("-m", 3) + 1] == "cuda" and cuda.count("-m") == 1  # "-m pytest" only


def test_train_stage_loader_workers_fit_in_shared_memory(monkeypatch):
    """Each loader worker keeps up to two batches in /dev/shm (88 MiB each at B=8, 512 px): a container's
    default 64 MiB takes none, and the workers would die with a bus error; fewer workers (0: the main
    process) keep the stage running, and a note says so."""
    usage = SimpleNamespace(free=0)
    monkeypatch.setattr(gpu_check.shutil, "disk_usage", lambda path: usage)
    batch_bytes = 8 * 512 * 512 * gpu_check.SAMPLE_BYTES_PER_PIXEL  # 88 MiB
    usage.free = 64 * 2**20
    workers, note = gpu_check.loader_workers(8, 8, 512)
    assert workers == 0 and "64 MiB free" in note and "0 workers instead of 8" in note
    usage.free = 3 * 3 * batch_bytes  # room for 3 workers of 2 batches each (+50 % slack)
    assert gpu_check.loader_workers(8, 8, 512)[0] == 3
    usage.free = 64 * 2**30
    assert gpu_check.loader_workers(8, 8, 512) == (8, None)
    assert gpu_check.loader_workers(0, 8, 512) == (0, None)

    def missing(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(gpu_check.shutil, "disk_usage", missing)
    workers, note = gpu_check.loader_workers(8, 8, 512)
    assert workers == 0 and "no /dev/shm" in note


def test_sample_bytes_per_pixel_is_what_a_training_sample_holds(tmp_path):
    """The loader-worker sizing counts the bytes of a real training sample (its tensors), per pixel."""
    pytest.importorskip("torchvision")
    from examples.voc_joint.data import build_dataset
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = generate_synthetic_voc(tmp_path, num_train=2, num_val=1, image_size=(36, 44), seed=1)
    sample = build_dataset(root, "train", crop_size=32, train=True)[0]
    held = sum(v.numel() * v.element_size() for v in sample.values() if isinstance(v, torch.Tensor))
    assert held == 32 * 32 * gpu_check.SAMPLE_BYTES_PER_PIXEL


# ----------------------------------------------------------------------------------------------- pytest
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.a" name="test_x[cuda]" time="0.1"/>
<testcase classname="tests.a" name="test_y[cuda]" time="0.1">
  <failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.b" name="test_z[cuda]" time="0.1"><error message="fixture broke">trace</error>
</testcase>
<testcase classname="tests.b" name="test_w[cuda]" time="0.0"><skipped message="CUDA is not available"/>
</testcase>
<testcase classname="tests.b" name="test_v[cuda]" time="0.1"/>
</testsuite></testsuites>
"""


def test_parse_junit(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    res = gpu_check.parse_junit(path)
    assert (res["passed"], res["failed"], res["errors"], res["skipped"]) == (2, 1, 1, 1)
    assert res["failures"][0] == {
        "test": "tests.a::test_y[cuda]",
        "kind": "failure",
        "message": "assert 1 == 2",
    }
    assert res["failures"][1]["kind"] == "error"


def test_parse_verbose_log_plain_and_xdist():
    log = "\n".join(
        [
            "tests/a.py::test_x[cuda] PASSED                [ 20%]",
            "tests/a.py::test_y[cuda] FAILED                [ 40%]",
            "[gw1] [ 60%] PASSED tests/b.py::test_z[cuda]",
            "[gw0] [ 80%] SKIPPED tests/b.py::test_w[cuda]",
            "[gw0] ERROR tests/b.py::test_v[cuda]",
            "some other line PASSED",
            # ids with spaces in their parameters: cut at the first space, these merged into one id each
            "tests/c.py::test_cmd[python x.py --device cuda] PASSED      [ 90%]",
            "tests/c.py::test_cmd[python x.py --device cuda --amp] FAILED [ 95%]",
            "[gw1] [ 97%] PASSED tests/d.py::test_dev[device cuda:0]",
            "[gw0] [ 99%] PASSED tests/d.py::test_dev[device cuda:1 ]",
        ]
    )
    res = gpu_check.parse_verbose_log(log)
    assert (res["passed"], res["failed"], res["errors"], res["skipped"]) == (5, 2, 1, 1)
    assert {f["test"] for f in res["failures"]} == {
        "tests/a.py::test_y[cuda]",
        "tests/b.py::test_v[cuda]",
        "tests/c.py::test_cmd[python x.py --device cuda --amp]",
    }


# ----------------------------------------------------------------------------------------------- targets
def _stages(scatter_x: float, joint_x: float, failed: int, tests_status: str = "ok") -> dict:
    rows = [{"N_s": n, "scatter": {"x_floor": scatter_x * f}} for n, f in ((1024, 0.9), (4096, 1.0))]
    return {
        "uniformize": {"status": "ok", "summary": {"auto_backend": "scatter", "rows": rows}},
        "joint": {"status": "ok", "summary": {"ratios": {"deeplab": 1.0, "joint_hard_ti": joint_x}}},
        "tests": {
            "status": tests_status,
            "summary": {"passed": 40, "failed": failed, "errors": 0, "skipped": 0},
        },
    }


def test_targets_met_and_not_met():
    met = gpu_check.evaluate_targets(_stages(1.4, 1.2, 0), on_gpu=True)
    assert [t["met"] for t in met] == [True, True, True]
    assert "worst 1.40x" in met[0]["figure"] and "joint_hard_ti 1.20x" in met[1]["figure"]
    missed = gpu_check.evaluate_targets(_stages(1.6, 1.31, 2, tests_status="failed"), on_gpu=True)
    assert [t["met"] for t in missed] == [False, False, False]
    assert "2 failed" in missed[2]["figure"]


def test_targets_without_figures_or_gpu_have_no_verdict():
    cut = gpu_check.evaluate_targets(_stages(1.0, 1.0, 0, tests_status="timeout"), on_gpu=True)
    assert cut[2]["met"] is None and "cut short" in cut[2]["figure"]  # no failure seen, but not all ran
    empty = gpu_check.evaluate_targets({}, on_gpu=True)
    assert [t["met"] for t in empty] == [None, None, None]
    dry = gpu_check.evaluate_targets(_stages(1.0, 1.0, 0), on_gpu=False)
    assert [t["met"] for t in dry] == [None, None, None]


def test_uniformize_target_is_not_met_over_the_configurations_that_survived():
    """A configuration whose backend (or floor) failed, e.g. out of memory at N_s = 16384, has no ratio: the
    target is then not evaluated and the failure named (it was judged met on the configurations that
    survived); a configuration with a figure above the bound still makes it not met."""
    ok = {"floor": {"fwd_ms": 0.5, "fwd_bwd_ms": 1.0, "setup_ms": 0.0}}
    raw = {
        "meta": {"auto_backend": "scatter"},
        "configs": [
            {"name": "a", "config": {"N_s": 1024, "B": 8}, "results": {**ok, "scatter": {"x_floor": 1.2}}},
            {
                "name": "b",
                "config": {"N_s": 16384, "B": 8},
                "results": {**ok, "scatter": {"skipped": "failed: OOM"}},
            },
            {"name": "c", "config": {"N_s": 4096, "B": 8}, "results": {"floor": {"skipped": "failed: X"}}},
        ],
    }
    stages = {"uniformize": {"status": "ok", "summary": gpu_check.summarize_uniformize(raw)}}
    (uni, *_) = gpu_check.evaluate_targets(stages, on_gpu=True)
    assert uni["met"] is None
    assert "N_s=16384 (failed: OOM)" in uni["figure"] and "N_s=4096 (failed: X)" in uni["figure"]
    raw["configs"][0]["results"]["scatter"]["x_floor"] = 1.6
    stages = {"uniformize": {"status": "ok", "summary": gpu_check.summarize_uniformize(raw)}}
    assert gpu_check.evaluate_targets(stages, on_gpu=True)[0]["met"] is False
    raw["configs"] = raw["configs"][1:]  # every configuration failed: still named
    stages = {"uniformize": {"status": "ok", "summary": gpu_check.summarize_uniformize(raw)}}
    (uni, *_) = gpu_check.evaluate_targets(stages, on_gpu=True)
    assert uni["met"] is None and "N_s=16384 (failed: OOM)" in uni["figure"] and "N_s=4096" in uni["figure"]


def _train_log(path: Path, rows: list[str]) -> Path:
    """A log.csv with ``rows`` (comma-separated values of the columns after the header)."""
    path.write_text("\n".join(["stage,epoch,step,loss,ce,spixel,lr,images_per_s,elapsed_s", *rows]) + "\n")
    return path


def test_train_log_steady_step_time(tmp_path):
    rows = [f"joint,1,{s},{1.0 / s:.6f},,,0.1,1.0,{5.0 + 0.5 * s:.1f}" for s in range(1, 61)]
    res = gpu_check.read_train_log(_train_log(tmp_path / "log.csv", rows), batch=8)
    assert res["steps"] == 60 and res["s_per_step"] == pytest.approx(0.5)
    assert res["images_per_s"] == pytest.approx(16.0)
    assert res["first_loss"] == "1.000000"


# ----------------------------------------------------------------------------------------------- harness
class _FakeEvent:
    clock = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t = None

    streams: list[object] = []  # noqa: RUF012  (the streams events were recorded on)

    def record(self, stream: object = None) -> None:
        _FakeEvent.streams.append(stream)
        _FakeEvent.clock += 2.5
        self.t = _FakeEvent.clock

    def synchronize(self) -> None:
        assert self.t is not None
        self.done = True

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert getattr(end, "done", False), "elapsed_time before the end event completed (CUDA: an error)"
        return end.t - self.t


def test_harness_gpu_branches_with_a_fake_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", device)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5 * 2**20)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", device))
    runs = []
    times = harness.time_ms(lambda: runs.append(1), 3, warmup=2, device="cuda:1")
    assert times == [2.5, 2.5, 2.5] and len(runs) == 5
    # the events time the measured device's stream (not device 0's, the current device by default)
    assert _FakeEvent.streams == [("stream of", torch.device("cuda:1"))] * 6
    memory = harness.PeakMemory("cuda")
    assert "reset" in calls and memory.extra_mib() == pytest.approx(4.0)
    assert harness.median([3.0, 1.0, 2.0, 4.0]) == 2.5


def test_harness_cpu_memory_and_environment():
    memory = harness.PeakMemory("cpu")
    assert memory.extra_mib() >= 0
    env = harness.environment("cpu", threads=1)
    assert env["threads"] == 1 and env["device"] == "cpu" and "load_average_at_start" in env


def test_environment_reads_the_gpu_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)  # no nvidia-smi
    meta = gpu_check._environment("cuda")
    assert meta["cuda_device"] == "Fake GPU" and meta["cuda_devices"] == 1 and "nvidia_smi" not in meta
    assert meta["torch"] == torch.__version__


def test_tqdm_stand_in_where_tqdm_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "_has_module", lambda name: False)
    folder = gpu_check.tqdm_stand_in(tmp_path)
    code = (
        "from tqdm.auto import tqdm\n"
        "bar = tqdm([1, 2, 3], desc='x', unit='batch', disable=False, dynamic_ncols=True)\n"
        "bar.set_postfix(loss=1.0); bar.update(1)\n"
        "print(sum(bar)); bar.close()\n"
    )
    run = gpu_check.run_command([sys.executable, "-c", code], 60, echo=False, extra_path=[folder])
    assert run.status == "ok" and run.output == "6\n"
    monkeypatch.setattr(gpu_check, "_has_module", lambda name: True)
    assert gpu_check.tqdm_stand_in(tmp_path / "other") is None


def test_an_interrupted_check_writes_its_report(tmp_path, monkeypatch, capsys):
    """The report of a check stopped during a stage is written, the work folder removed; its failed stages
    are the running one and those it never started (they did not finish ok either), not only those it
    recorded."""

    def interrupted_stages(args, stages, report, *rest):
        report["stages"]["uniformize"] = {"title": "(b)", "command": [], "notes": [], "status": "ok"}
        report["stages"]["joint"] = {"title": "(c)", "command": [], "notes": []}  # running when stopped
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "run_stages", interrupted_stages)
    argv = ["--device", "cpu", "--quick", "--stages", "uniformize,joint,tests", "--output-dir", str(tmp_path)]
    assert gpu_check.main(argv) == 130
    assert "FAILED stages: joint, tests (exit status 130)" in capsys.readouterr().out
    report = json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())
    assert report["stages"]["joint"]["status"] == "interrupted" and report["exit_status"] == 130
    assert not Path(report["meta"]["work"]).exists()  # the work folder is removed
    assert "interrupted" in (tmp_path / "gpu_check_cpu_quick.txt").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to oneself: POSIX")
def test_a_check_stopped_by_sigterm_exits_143(tmp_path, monkeypatch):
    """SIGTERM (the budget's stop, a scheduler's) gave exit status 130, Ctrl-C's; it is 143 now, as a
    shell reports a process ended by SIGTERM, in the report too."""
    import os
    import signal

    def stopped_stages(args, stages, report, *rest):
        report["stages"]["joint"] = {"title": "(c)", "command": [], "notes": []}  # running when stopped
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(gpu_check, "run_stages", stopped_stages)
    argv = ["--device", "cpu", "--quick", "--stages", "joint", "--output-dir", str(tmp_path)]
    assert gpu_check.main(argv) == 143
    report = json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())
    assert report["stages"]["joint"]["status"] == "interrupted" and report["exit_status"] == 143


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM / SIGHUP to oneself: POSIX")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_check_started_with_a_signal_ignored_runs_on_after_it(name, tmp_path, monkeypatch):
    """A SIGTERM or SIGHUP (``nohup``) the process was started to ignore stays ignored: the stage finishes."""
    import os
    import signal

    number = getattr(signal, name)

    def stages_ending_well(args, stages, report, *rest):
        os.kill(os.getpid(), number)
        report["stages"]["joint"] = {"title": "(c)", "command": [], "notes": [], "status": "ok"}

    monkeypatch.setattr(gpu_check, "run_stages", stages_ending_well)
    before = signal.signal(number, signal.SIG_IGN)
    try:
        argv = ["--device", "cpu", "--quick", "--stages", "joint", "--output-dir", str(tmp_path)]
        assert gpu_check.main(argv) == 0
        assert signal.getsignal(number) is signal.SIG_IGN
    finally:
        signal.signal(number, before)
    report = json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())
    assert report["stages"]["joint"]["status"] == "ok" and report["exit_status"] == 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP: POSIX")
def test_a_check_stopped_by_sighup_writes_its_report_and_exits_129(tmp_path, monkeypatch):
    """SIGHUP (a closed terminal) is SIGTERM's stop, exit status 129: before, it killed the check at once,
    with no report, and left the running stage (a session of its own, which the terminal's SIGHUP does not
    reach) running on."""
    import os
    import signal

    def stopped_stages(args, stages, report, *rest):
        report["stages"]["joint"] = {"title": "(c)", "command": [], "notes": []}  # running when stopped
        os.kill(os.getpid(), signal.SIGHUP)

    monkeypatch.setattr(gpu_check, "run_stages", stopped_stages)
    before = signal.getsignal(signal.SIGHUP)
    argv = ["--device", "cpu", "--quick", "--stages", "joint", "--output-dir", str(tmp_path)]
    assert gpu_check.main(argv) == 129
    assert signal.getsignal(signal.SIGHUP) == before  # the handler is restored
    report = json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())
    assert report["stages"]["joint"]["status"] == "interrupted" and report["exit_status"] == 129
    assert "SIGHUP" in report["stages"]["joint"]["error"]


def test_time_ms_on_the_cpu_times_each_run_alone_in_milliseconds(monkeypatch):
    """Each run's own duration (not the time since the first run), in ms, after untimed warm-up runs."""

    clock = [0.0]
    durations = iter([0.5, 0.002, 0.003, 0.001])  # the warm-up run, then three timed ones (seconds)
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def run() -> None:
        clock[0] += next(durations)

    assert harness.time_ms(run, 3, warmup=1) == pytest.approx([2.0, 3.0, 1.0])


def test_peak_memory_figures_in_mib_above_the_start(monkeypatch):
    """CPU: KiB of /proc/self/status above the region's start / 1024 (MiB, as labelled); ru_maxrss (KiB on
    Linux) likewise, where the peak reset is refused."""

    status = {"VmRSS": 1_000_000, "VmHWM": 1_000_000}
    monkeypatch.setattr(harness, "_proc_status_kib", lambda field: status[field])
    monkeypatch.setattr(harness, "_reset_peak_rss", lambda: True)
    memory = harness.PeakMemory("cpu")
    status["VmHWM"] += 3 * 1024
    assert memory.method == "vmhwm_reset" and memory.extra_mib() == 3.0

    usage = SimpleNamespace(ru_maxrss=500_000)
    monkeypatch.setattr(harness, "_reset_peak_rss", lambda: False)
    monkeypatch.setattr(
        harness,
        "resource",
        SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: SimpleNamespace(**vars(usage))),
    )
    memory = harness.PeakMemory("cpu")
    usage.ru_maxrss += 2 * 1024
    assert memory.method == "ru_maxrss" and memory.extra_mib() == 2.0


def test_peak_reset_counts_only_when_the_kernel_applied_it(monkeypatch):
    """Writing /proc/self/clear_refs may succeed without resetting VmHWM (older kernels): then the peak is
    still the process's old one and the reset is reported as refused."""
    import io

    status = {"VmRSS": 1_000_000, "VmHWM": 1_000_000 + 4096}
    monkeypatch.setattr(harness, "open", lambda *args, **kwargs: io.StringIO(), raising=False)
    monkeypatch.setattr(harness, "_proc_status_kib", lambda field: status[field])
    assert harness._reset_peak_rss() is False
    status["VmHWM"] = status["VmRSS"] + 512  # within the 1 MiB slack: the reset took
    assert harness._reset_peak_rss() is True


# ----------------------------------------------------------------------------------------------- summaries
def test_joint_summary_quotes_the_ratio_of_medians_step_ms_and_paired_format_ratios():
    """The (c) figures: time_ratio (ratio of the medians, the target's figure), the step in ms, and each
    network's paired channels_last / NCHW ratio (the figure the docs quote)."""
    rows = [
        {
            "variant": "deeplab",
            "median_s": 0.2,
            "time_ratio": 1.0,
            "time_ratio_paired": 1.0,
            "memory_ratio": 1.0,
        },
        {"variant": "joint_hard_ti", "median_s": 0.25, "time_ratio": 1.25, "time_ratio_paired": 1.2},
    ]
    formats = [
        {"network": "deeplab", "time_ratio": 1.05, "time_ratio_paired": 1.02},
        {"network": "spixelfcn", "time_ratio": 0.9, "time_ratio_paired": 0.88},
    ]
    raw = {"cuda_resnet101_b8_512_amp": {"config": {"size": 512}, "rows": rows, "formats": formats}}
    joint = gpu_check.summarize_joint(raw)
    assert joint["ratios"] == {"deeplab": 1.0, "joint_hard_ti": 1.25}
    assert joint["step_ms"] == pytest.approx({"deeplab": 200.0, "joint_hard_ti": 250.0})
    assert joint["memory_ratios"] == {"deeplab": 1.0, "joint_hard_ti": None}
    assert joint["channels_last_ratios"] == {"deeplab": 1.02, "spixelfcn": 0.88}


def test_uniformize_summary_names_the_fastest_backend_and_the_paired_ratio():
    res = {
        "floor": {"fwd_ms": 0.5, "fwd_bwd_ms": 1.0, "setup_ms": 0.0},
        "scatter": {"fwd_ms": 1.0, "fwd_bwd_ms": 2.0, "setup_ms": 0.1, "x_floor": 2.0, "paired_x_floor": 1.8},
        "sparse": {"fwd_ms": 1.5, "fwd_bwd_ms": 3.0, "setup_ms": 0.2, "x_floor": 3.0},
        "dense_bmm": {"skipped": "needs 9.0 GB > budget 4 GB (--dense-max-gb)"},
    }
    raw = {
        "meta": {"auto_backend": "scatter"},
        "configs": [{"name": "n", "config": {"N_s": 64, "B": 8}, "results": res}],
    }
    (row,) = gpu_check.summarize_uniformize(raw)["rows"]
    assert row["fastest_backend"] == "scatter" and row["scatter_paired_x_floor"] == 1.8
    assert row["sparse"]["x_floor"] == 3.0 and row["dense_bmm"]["skipped"].startswith("needs")


def test_targets_at_their_bounds_and_a_gpu_run_that_ran_no_test():
    """A figure equal to its bound meets the target; a CUDA test stage that passed nothing (every test
    skipped: the GPU was not used) does not count as "zero failing CUDA tests"."""
    at = gpu_check.evaluate_targets(
        _stages(gpu_check.TARGET_UNIFORMIZE, gpu_check.TARGET_JOINT, 0), on_gpu=True
    )
    assert [t["met"] for t in at] == [True, True, True]
    stages = _stages(1.0, 1.0, 0)
    stages["tests"]["summary"] = {"passed": 0, "failed": 0, "errors": 0, "skipped": 40}
    assert gpu_check.evaluate_targets(stages, on_gpu=True)[2]["met"] is False


def test_train_log_steady_step_time_leaves_out_the_first_steps(tmp_path):
    """The first steps (cuDNN autotuning, allocator growth, the loader's start) are slow: the steady time is
    measured from the 10th logged step on."""
    elapsed, rows = 0.0, []
    for s in range(1, 22):
        elapsed += 5.0 if s <= 5 else 0.5
        rows.append(f"seg,1,{s},1.0,,,0.1,1.0,{elapsed:.1f}")
    res = gpu_check.read_train_log(_train_log(tmp_path / "log.csv", rows), batch=8)
    assert (
        res["steps"] == 21
        and res["s_per_step"] == pytest.approx(0.5)
        and res["images_per_s"] == pytest.approx(16)
    )


# ----------------------------------------------------------------------------------------------- harness (2)
def test_peak_memory_starts_from_the_resident_size_not_the_reset_peak(monkeypatch):
    """After the reset the peak may sit up to 1 MiB above the resident size: the region's growth is counted
    from the resident size (VmRSS), not from that peak."""
    status = {"VmRSS": 1_000_000, "VmHWM": 1_000_000 + 900}  # the reset took (within its 1 MiB slack)
    monkeypatch.setattr(harness, "_proc_status_kib", lambda field: status[field])
    monkeypatch.setattr(harness, "_reset_peak_rss", lambda: True)
    memory = harness.PeakMemory("cpu")
    status["VmHWM"] = status["VmRSS"] + 4 * 1024
    assert memory.method == "vmhwm_reset" and memory.extra_mib() == 4.0


def test_warmup_runs_per_device():
    """Three untimed runs on CUDA (autotuning, allocator growth), one on the CPU."""
    assert harness.warmup_runs(torch.device("cuda")) == 3
    assert harness.warmup_runs(torch.device("cuda:1")) == 3
    assert harness.warmup_runs(torch.device("cpu")) == 1


# ----------------------------------------------------------------------------------------------- verdicts (2)
def test_a_test_error_fails_the_zero_failing_tests_target():
    """Errors (a fixture or collection that broke) count as failing CUDA tests, like failures."""
    stages = _stages(1.0, 1.0, 0, tests_status="failed")  # pytest exits 1 on errors too
    stages["tests"]["summary"]["errors"] = 1
    verdict = gpu_check.evaluate_targets(stages, on_gpu=True)[2]
    assert verdict["met"] is False and "1 errors" in verdict["figure"]


def test_a_test_run_that_finished_with_failures_is_not_called_cut_short():
    """pytest's exit status 1 is a run that finished with failures: its counts are whole. The first GPU run
    (gpu_check_cuda_20261204_h200_first.txt) read "137 passed, 9 failed, 1 errors, 5 skipped (cut short)" for
    a run that had finished in 30 s; a run killed at its time limit is cut short."""
    stages = _stages(1.0, 1.0, 9, tests_status="failed")
    stages["tests"]["returncode"] = 1
    verdict = gpu_check.evaluate_targets(stages, on_gpu=True)[2]
    assert verdict["met"] is False and "9 failed" in verdict["figure"]
    assert "cut short" not in verdict["figure"]
    stages["tests"].update(status="timeout", returncode=-15)
    assert "(cut short)" in gpu_check.evaluate_targets(stages, on_gpu=True)[2]["figure"]
    stages["tests"].update(status="failed", returncode=-11)  # pytest itself crashed: the log is partial
    assert "(cut short)" in gpu_check.evaluate_targets(stages, on_gpu=True)[2]["figure"]


def test_uniformize_target_uses_the_backend_auto_resolves_to():
    """The (b) verdict is on the backend ``"auto"`` picks on the device, not on scatter."""
    rows = [{"N_s": n, "scatter": {"x_floor": 2.0}, "sparse": {"x_floor": 1.2}} for n in (1024, 4096)]
    stages = {"uniformize": {"status": "ok", "summary": {"auto_backend": "sparse", "rows": rows}}}
    verdict = gpu_check.evaluate_targets(stages, on_gpu=True)[0]
    assert verdict["met"] is True and "backend 'sparse'" in verdict["figure"] and "1.20x" in verdict["figure"]


def test_text_summary_marks_each_verdict():
    report = {
        "meta": {
            "device": "cuda",
            "quick": False,
            "platform": "p",
            "torch": "t",
            "time": "now",
            "budget_s": 440,
        },
        "on_gpu": True,
        "stages": {},
        "targets": gpu_check.evaluate_targets(_stages(1.4, 1.31, 0), on_gpu=True),
    }
    text = gpu_check.render_summary(report)
    marks = [line.split("]")[0] for line in text.splitlines() if line.startswith("  [")]
    assert marks == ["  [met", "  [NOT MET", "  [met"]


def test_train_log_wall_time_is_the_last_step(tmp_path):
    rows = [f"seg,1,{s},1.0,,,0.1,1.0,{2.0 * s:.1f}" for s in range(1, 6)]
    res = gpu_check.read_train_log(_train_log(tmp_path / "log.csv", rows), batch=2)
    assert (res["steps"], res["wall_s"], res["s_per_step"]) == (5, 10.0, 2.0)


# ----------------------------------------------------------------------------------------------- run_stages
def _stage_run_setup(tmp_path):
    argv = ["--device", "cpu", "--quick", "--stages", "uniformize,joint,soft", "--budget", "200"]
    args = gpu_check.parse_args([*argv, "--output-dir", str(tmp_path)])
    work = tmp_path / "work"
    work.mkdir()
    meta = {"device": "cpu", "quick": True, "platform": "p", "torch": "t", "time": "now", "budget_s": 200}
    report = {"meta": meta, "on_gpu": False, "stages": {}, "targets": []}
    return args, gpu_check.build_stages(args, work), report, work


def test_run_stages_budget_limits_report_after_each_stage_and_no_figures_from_a_failed_stage(
    tmp_path, monkeypatch
):
    """The budget runs from the check's start (100 s already spent here), the 20 s that stopping a stage may
    take stay out of it and every later stage keeps 30 s; the report on disk is rewritten before the next
    stage starts; a failed stage's result file makes no summary
    (no target is judged on it) but is kept raw in the report (the work folder is deleted: its figures were
    lost with it)."""
    args, stages, report, work = _stage_run_setup(tmp_path)
    json_path, txt_path = tmp_path / "r.json", tmp_path / "r.txt"
    limits: dict[str, float] = {}
    seen: dict[str, dict] = {}
    results = {
        "uniformize": {"meta": {"auto_backend": "scatter"}, "configs": []},
        "joint": {"k": {"rows": [{"variant": "deeplab", "time_ratio": 1.0, "median_s": 0.1}]}},
        "soft": {"soft": {"rows": [], "max_abs_diff_f64": 0.0}, "segnet_unpool": {"paired_ratio_to_nn": 1.0}},
    }

    def run_command(cmd, timeout, log_path=None, echo=True, extra_path=None, on_stop=None):
        name = log_path.stem
        limits[name] = timeout
        (work / f"{name}.json").write_text(json.dumps(results[name]))
        if name == "uniformize":  # wrote its file, then failed
            return gpu_check.StageRun("failed", 1.0, 1, "boom\n", "exit status 1: boom")
        seen[name] = json.loads(json_path.read_text())["stages"]
        assert txt_path.is_file()
        return gpu_check.StageRun("ok", 1.0, 0, "", None)

    monkeypatch.setattr(gpu_check, "run_command", run_command)
    # a frozen clock (the stages take no time here): the limits are exact on a stalled machine too
    monkeypatch.setattr(
        gpu_check, "time", SimpleNamespace(perf_counter=lambda: 1000.0, strftime=time.strftime)
    )
    gpu_check.run_stages(args, stages, report, work, None, 1000.0 - 100, json_path, txt_path)
    # 100 s left, 20 to stop a stage: uniformize 30 (80 - 2 x 30 is below 30 s), joint 80 - 30, soft 80
    assert limits == {"uniformize": 30, "joint": 50, "soft": 80}
    assert seen["joint"]["uniformize"]["status"] == "failed" and "joint" in seen["soft"]
    entries = report["stages"]
    assert entries["uniformize"]["status"] == "failed" and "summary" not in entries["uniformize"]
    assert entries["uniformize"]["raw"] == results["uniformize"]
    assert entries["joint"]["summary"]["ratios"] == {"deeplab": 1.0} and entries["soft"]["status"] == "ok"


def test_a_short_budget_runs_the_first_stages_first(tmp_path, monkeypatch):
    """A budget too short to keep 30 s for every later stage gives the first stages (the target-bearing
    benchmarks) what is left, up to their limits. Before, each stage kept 30 s back for each later one, so
    with 100 s the first two stages were "not run" one second into the check and the tests, soft and train
    stages got the time instead."""
    argv = ["--device", "cpu", "--quick", "--budget", "100", "--output-dir", str(tmp_path)]
    args = gpu_check.parse_args(argv)
    work = tmp_path / "work"
    work.mkdir()
    meta = {"device": "cpu", "quick": True, "platform": "p", "torch": "t", "time": "now", "budget_s": 100}
    report = {"meta": meta, "on_gpu": False, "stages": {}, "targets": []}
    clock = [1000.0]
    limits: dict[str, float] = {}

    def run_command(cmd, timeout, log_path=None, echo=True, extra_path=None, on_stop=None):
        limits[log_path.stem] = timeout
        clock[0] += timeout  # the stage takes its whole limit
        return gpu_check.StageRun("ok", timeout, 0, "", None)

    monkeypatch.setattr(gpu_check, "run_command", run_command)
    monkeypatch.setattr(
        gpu_check, "time", SimpleNamespace(perf_counter=lambda: clock[0], strftime=time.strftime)
    )
    monkeypatch.setattr(gpu_check, "SUMMARIZE", {k: (lambda raw: {}) for k in gpu_check.SUMMARIZE})
    stages = gpu_check.build_stages(args, work)
    for stage in stages.values():
        stage.result_path = None
    gpu_check.run_stages(args, stages, report, work, None, 1000.0, tmp_path / "r.json", tmp_path / "r.txt")
    # 100 s less the 20 s to stop a stage: 30 s each for the first two, the 20 s left for the third
    assert args.stage_list[:3] == ["uniformize", "joint", "tests"]
    assert limits == {"uniformize": 30, "joint": 30, "tests": 20}
    assert [e["status"] == "not_run" for e in report["stages"].values()] == [False] * 3 + [True] * 2
    assert [gpu_check.stage_timeout(90, 80, later) for later in (0, 1, 2, 3, 4)] == [80, 50, 30, 30, 30]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM to oneself: POSIX")
def test_a_stop_signal_keeps_the_running_stages_test_outcomes_and_writes_them_before_killing_it(
    tmp_path, monkeypatch
):
    """SIGTERM during the tests stage: the outcomes pytest had printed and the log's tail are in the report
    (as after a timeout), written before the stage's processes are killed (a SIGKILL after the signal, the
    machine's time limit, leaves them on disk). Before, the entry held only "interrupted" and the report was
    written after the kill (up to 10 s later)."""
    import signal
    import threading

    printed = tmp_path / "printed"
    lines = "".join(f"print('tests/t.py::test_{i} PASSED', flush=True); " for i in range(3))
    lines += f"print('tests/t.py::test_x FAILED', flush=True); open({str(printed)!r}, 'w').close(); "
    slow = [sys.executable, "-c", lines + "import time; time.sleep(60)"]
    original = gpu_check.build_stages

    def build_stages(args, work):
        stages = original(args, work)
        stages["tests"].cmd = slow
        return stages

    on_disk_at_kill: list[dict] = []
    kill = gpu_check._kill_group

    def kill_group(proc):
        on_disk_at_kill.append(json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text()))
        kill(proc)

    monkeypatch.setattr(gpu_check, "build_stages", build_stages)
    monkeypatch.setattr(gpu_check, "_kill_group", kill_group)

    def stop_when_printed() -> None:
        deadline = time.monotonic() + 60
        while not printed.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the check's reader takes the lines from the pipe
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_printed, daemon=True).start()
    argv = ["--device", "cpu", "--quick", "--stages", "tests", "--output-dir", str(tmp_path)]
    assert gpu_check.main(argv) == 143
    for report in (on_disk_at_kill[0], json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())):
        entry = report["stages"]["tests"]
        assert entry["status"] == "interrupted" and "test_2 PASSED" in entry["log_tail"]
        assert (entry["summary"]["passed"], entry["summary"]["failed"]) == (3, 1)
    assert "SIGTERM" in entry["error"]
    assert "3 passed, 1 failed" in (tmp_path / "gpu_check_cpu_quick.txt").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="process groups: POSIX")
def test_a_stop_while_a_timed_out_stage_is_being_killed_still_records_it_and_kills_it(tmp_path, monkeypatch):
    """A signal that arrives while a stage that ran out of time is being stopped left the timeout branch:
    its output was not recorded (no ``on_stop``) and the SIGKILL step was skipped, so a stage that ignores
    SIGTERM outlived the check."""
    pid_file = tmp_path / "stage.pid"
    code = (
        f"import os, signal, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('tests/t.py::test_a PASSED', flush=True); "
        "time.sleep(60)"
    )
    kill, calls, records = gpu_check._kill_group, [], []

    def interrupted_kill(proc):
        calls.append(proc.pid)
        if len(calls) == 1:  # the timeout's kill: a signal arrives during it
            raise KeyboardInterrupt
        kill(proc)

    monkeypatch.setattr(gpu_check, "_kill_group", interrupted_kill)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.run_command([sys.executable, "-c", code], 2, echo=False, on_stop=records.append)
    assert len(calls) == 2 and len(records) == 1
    assert records[0].status == "interrupted" and "test_a PASSED" in records[0].output
    pid = int(pid_file.read_text())
    _assert_ends(pid, "after the check, the stage")


def test_run_stages_does_not_start_a_stage_without_time_left(tmp_path, monkeypatch):
    args, stages, report, work = _stage_run_setup(tmp_path)

    def run_command(*args, **kwargs):
        raise AssertionError("a stage started with no time left")

    monkeypatch.setattr(gpu_check, "run_command", run_command)
    t_start = time.perf_counter() - 195  # 5 s of the 200 s budget left
    gpu_check.run_stages(args, stages, report, work, None, t_start, tmp_path / "r.json", tmp_path / "r.txt")
    assert [e["status"] for e in report["stages"].values()] == ["not_run"] * 3


@pytest.mark.parametrize(
    ("status", "exit_status"), [("ok", 0), ("timeout", 1), ("not_run", 1), ("parse_error", 1)]
)
def test_exit_status_counts_every_stage_that_did_not_finish_ok(status, exit_status, tmp_path, monkeypatch):
    def stages_ran(args, stages, report, *rest):
        report["stages"]["uniformize"] = {"title": "(b)", "command": [], "notes": [], "status": "ok"}
        report["stages"]["joint"] = {"title": "(c)", "command": [], "notes": [], "status": status}

    monkeypatch.setattr(gpu_check, "run_stages", stages_ran)
    argv = ["--device", "cpu", "--quick", "--stages", "uniformize,joint", "--output-dir", str(tmp_path)]
    assert gpu_check.main(argv) == exit_status
    assert json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())["exit_status"] == exit_status


def test_a_report_write_stopped_halfway_leaves_the_previous_stages_report(tmp_path, monkeypatch):
    """The report and its summary are rewritten after every stage; ``Path.write_text`` truncated them first,
    so a check stopped during a write (the budget's SIGKILL, a full disk) left an empty report.json in place
    of the previous stage's. Both are now written to a temporary file renamed into place: the previous
    report stays whole and no temporary file is left."""
    import builtins
    import io

    meta = {"device": "cuda", "quick": False, "platform": "p", "torch": "t", "time": "now", "budget_s": 1}
    report = {
        "meta": meta,
        "on_gpu": True,
        "stages": {},
        "targets": gpu_check.evaluate_targets(_stages(1.4, 1.31, 0), on_gpu=True),
    }
    json_path, txt_path = tmp_path / "report.json", tmp_path / "summary.txt"
    gpu_check._write(report, json_path, txt_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_open = io.open

    class Stopped(BaseException):
        pass

    def stopping_open(file, mode="r", *args, **kwargs):  # the file is opened (truncated), then the run stops
        fh = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).parent == tmp_path:
            fh.close()
            raise Stopped
        return fh

    monkeypatch.setattr(io, "open", stopping_open)
    monkeypatch.setattr(builtins, "open", stopping_open)
    with pytest.raises(Stopped):
        gpu_check._write({**report, "stages": {"tests": {"status": "ok"}}}, json_path, txt_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _train_result(transparency: dict) -> dict:
    """A ``train_check.json`` as the train stage writes it (through ``write_json``)."""
    seg = {"steps": 2, "wall_s": 1.0, "s_per_step": None, "images_per_s": None}
    seg.update(first_loss="3.0", last_loss="2.9")
    return {"config": "c", "stages": {"seg": seg}, "joint_over_seg": None, "transparency": transparency}


def test_a_figure_written_as_null_does_not_stop_the_check(tmp_path, monkeypatch):
    """``write_json`` writes a NaN or an infinite figure as ``null``: a step-0 transparency that came out NaN
    under AMP, a paired ratio of the soft or the joint stage. The text summary formatted it with ``:.3g``:
    a ``TypeError`` out of the check after the stage, so no later stage ran and the summary kept the earlier
    stage's text. It is written as ``nan`` now, and the next stage runs."""
    args = gpu_check.parse_args(
        ["--device", "cpu", "--quick", "--stages", "joint,soft,train", "--output-dir", str(tmp_path)]
    )
    work = tmp_path / "work"
    work.mkdir()
    stages = gpu_check.build_stages(args, work)
    meta = {"device": "cpu", "quick": True, "platform": "p", "torch": "t", "time": "now", "budget_s": 400}
    report = {"meta": meta, "on_gpu": False, "stages": {}, "targets": []}
    nan = float("nan")
    joint_row = {"variant": "deeplab", "time_ratio": 1.0, "median_s": 0.1}
    results = {
        "joint": {"k": {"rows": [joint_row], "formats": [{"network": "deeplab", "time_ratio_paired": nan}]}},
        "soft": {"soft": {"rows": [], "max_abs_diff_f64": 0.0}, "segnet_unpool": {"paired_ratio_to_nn": nan}},
        "train": _train_result({"amp": {"max_abs_diff": nan, "max_abs_logit": nan, "relative": nan}}),
    }
    ran = []

    def run_command(cmd, timeout, log_path=None, echo=True, extra_path=None, on_stop=None):
        name = log_path.stem
        ran.append(name)
        _atomic.write_json(stages[name].result_path, results[name])  # NaN written as null
        return gpu_check.StageRun("ok", 1.0, 0, "", None)

    monkeypatch.setattr(gpu_check, "run_command", run_command)
    json_path, txt_path = tmp_path / "r.json", tmp_path / "r.txt"
    gpu_check.run_stages(args, stages, report, work, None, time.perf_counter(), json_path, txt_path)
    assert ran == ["joint", "soft", "train"]
    text = txt_path.read_text()
    assert "deeplab nanx" in text and "(paired) nanx" in text
    assert "max |joint - U(DeepLabV3+)| = nan (max |logit| nan, relative nan)" in text
    assert set(json.loads(json_path.read_text())["stages"]) == {"joint", "soft", "train"}


def test_a_step0_transparency_that_is_not_finite_fails_the_train_stage(tmp_path, monkeypatch):
    """A NaN or infinite step-0 difference (``null`` in ``train_check.json``) means the joint model was not
    shown transparent, yet the stage was reported ``ok`` (exit status 0); it is ``failed`` now, naming the
    figure, while a finite one leaves the stage ok."""
    args = gpu_check.parse_args(
        ["--device", "cpu", "--quick", "--stages", "train", "--output-dir", str(tmp_path)]
    )
    work = tmp_path / "work"
    work.mkdir()
    stages = gpu_check.build_stages(args, work)
    finite = {"max_abs_diff": 0.0, "max_abs_logit": 2.0, "relative": 0.0}
    for amp, status in ((finite, "ok"), ({**finite, "max_abs_diff": float("nan")}, "failed")):
        result = _train_result({"float32": finite, "amp": amp})

        def run_command(cmd, timeout, log_path=None, echo=True, extra_path=None, on_stop=None, result=result):
            _atomic.write_json(stages["train"].result_path, result)
            return gpu_check.StageRun("ok", 1.0, 0, "", None)

        monkeypatch.setattr(gpu_check, "run_command", run_command)
        meta = {"device": "cpu", "quick": True, "platform": "p", "torch": "t", "time": "now", "budget_s": 400}
        report = {"meta": meta, "on_gpu": False, "stages": {}, "targets": []}
        json_path, txt_path = tmp_path / "r.json", tmp_path / "r.txt"
        gpu_check.run_stages(args, stages, report, work, None, time.perf_counter(), json_path, txt_path)
        entry = report["stages"]["train"]
        assert entry["status"] == status
        if status == "failed":
            assert (
                entry["error"]
                == "step-0 transparency: no finite figure (NaN or infinite) for amp max_abs_diff"
            )
            assert "train       failed" in txt_path.read_text()


def test_the_step0_transparency_model_has_the_memory_format_the_joint_stage_trains_in(
    tmp_path, monkeypatch
) -> None:
    """The step-0 figure's model was built with ``--channels-last`` unset, which builds it all NCHW, while the
    joint stage resolves the unset option to the device's default first (SpixelFCN in channels_last on CPU
    and CUDA): the figure measured another model than the one the run trains. It resolves it alike now."""
    from examples.voc_joint import train as train_cli
    from examples.voc_joint.models.joint import DEFAULT_CHANNELS_LAST
    from tests.examples.helpers import untrained_checkpoints

    seg, spx = untrained_checkpoints(tmp_path)
    built = []

    class Built(Exception):
        pass

    def build(stage, args):
        built.append(args.channels_last)
        raise Built

    monkeypatch.setattr(train_cli, "build_stage_model", build)
    with pytest.raises(Built):
        gpu_check.step0_transparency([], seg, spx, tmp_path, 2, 32, torch.device("cpu"), False)
    assert built == [DEFAULT_CHANNELS_LAST["cpu"]] and built[0] is not False


def test_a_device_index_the_machine_lacks_is_refused(tmp_path, monkeypatch, capsys):
    """``--device cuda:1`` on a machine with one GPU passed the checks and ended in torch's
    ``AssertionError: Invalid device id`` traceback (reading the device's name), after the work folder was
    made; it is exit status 2 with one line naming the devices, and nothing is written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    made = []
    monkeypatch.setattr(gpu_check.tempfile, "mkdtemp", lambda **kw: made.append(kw) or str(tmp_path / "w"))
    assert gpu_check.main(["--device", "cuda:1", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda:1: this machine has 1 CUDA device (cuda:0 to cuda:0)" in err
    assert not made and not (tmp_path / "out").exists()


def test_an_output_dir_this_user_may_not_write_in_is_refused_at_parse_time(tmp_path, monkeypatch, capsys):
    """An existing ``--output-dir`` without write permission passed the checks: the first stage ran (up to
    minutes of the GPU's time), then writing its report ended the check in a ``PermissionError`` traceback and
    no later stage ran. It is refused before anything runs, as a file in its place is."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(["--device", "cpu", "--quick", "--output-dir", str(locked)])
    assert info.value.code == 2
    assert f"--output-dir: this user may not write in the folder '{locked}'" in capsys.readouterr().err
    assert gpu_check.parse_args(["--device", "cpu", "--quick", "--output-dir", str(tmp_path / "new")])


def test_a_quick_run_on_a_gpu_judges_no_target(tmp_path, monkeypatch):
    """``--quick`` on a GPU measures tiny sizes (ResNet-18, 64 px, B=2): the targets were judged on them all
    the same, ``[met] joint training step <= 1.3x DeepLabV3+ alone (ResNet-101, B=8, 512 px, AMP)`` for a
    figure of another configuration. They are shown with their figures and left not evaluated, as in the dry
    run; a full GPU run still judges them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    meta = {"platform": "p", "torch": "t", "time": "now", "cuda_device": "Fake GPU"}
    monkeypatch.setattr(gpu_check, "_environment", lambda device: dict(meta))
    rows = [
        {"variant": v, "time_ratio": x, "median_s": 0.1}
        for v, x in (("deeplab", 1.0), ("joint_hard_ti", 1.1))
    ]

    def run_command(cmd, timeout, log_path=None, echo=True, extra_path=None, on_stop=None):
        _atomic.write_json(cmd[cmd.index("--out") + 1], {"k": {"rows": rows}})
        return gpu_check.StageRun("ok", 1.0, 0, "", None)

    verdicts = []  # of the joint target, in every report written (after the stage, at the end)
    real_write = gpu_check._write

    def write(report, json_path, txt_path):
        verdicts.append(next(t for t in report["targets"] if t["target"].startswith("joint")))
        real_write(report, json_path, txt_path)

    monkeypatch.setattr(gpu_check, "run_command", run_command)
    monkeypatch.setattr(gpu_check, "_write", write)
    for quick, met in ((True, None), (False, True)):
        verdicts.clear()
        argv = ["--device", "cuda", "--stages", "joint", "--output-dir", str(tmp_path)] + ["--quick"] * quick
        assert gpu_check.main(argv) == 0
        assert len(verdicts) == 2
        assert all(v["met"] is met and "joint_hard_ti 1.10x" in v["figure"] for v in verdicts)
    assert "[not evaluated] joint" in (tmp_path / "gpu_check_cuda_quick.txt").read_text()


def test_the_train_stage_process_does_not_need_the_default_output_dir(tmp_path, monkeypatch):
    """The train stage's own process (``--_train``) is started without ``--output-dir`` and writes no report:
    a default results folder this user may not write in (the check run with ``--output-dir`` elsewhere) must
    not refuse it."""
    default = gpu_check.build_parser().get_default("output_dir")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != default and real_access(path, mode))
    args = gpu_check.parse_args(["--device", "cpu", "--quick", "--_train", str(tmp_path / "train")])
    assert args._train == tmp_path / "train"
    with pytest.raises(SystemExit):  # the check itself is refused
        gpu_check.parse_args(["--device", "cpu", "--quick"])


@pytest.mark.skipif(sys.platform == "win32", reason="process groups: POSIX")
def test_a_record_that_fails_on_a_stop_still_kills_the_stage_and_the_stop_goes_on(tmp_path):
    """``on_stop`` raising (a full disk while the report is written) neither replaces the interrupt nor skips
    the kill of the stage's processes."""
    pid_file = tmp_path / "stage.pid"
    code = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('up', flush=True); "
        "time.sleep(60)"
    )

    def failing_record(run):
        raise RuntimeError("the disk is full")

    import threading

    def interrupt_when_up() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        import _thread

        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_up, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        gpu_check.run_command([sys.executable, "-c", code], 60, echo=False, on_stop=failing_record)
    pid = int(pid_file.read_text())
    _assert_ends(pid, "after the check, the stage")


def test_a_stage_with_exactly_the_shortest_time_left_runs_and_the_least_budget_is_accepted(
    tmp_path, monkeypatch
):
    """10 s left (SHORTEST_STAGE_S) is enough to start a stage; --budget 50 (a stage's 30 s and the 20 s to
    stop it) is accepted and 49.9 refused."""
    args, stages, report, work = _stage_run_setup(tmp_path)
    args.stage_list = ["soft"]
    limits: dict[str, float] = {}

    def run_command(cmd, timeout, log_path=None, echo=True, extra_path=None, on_stop=None):
        limits[log_path.stem] = timeout
        return gpu_check.StageRun("ok", 1.0, 0, "", None)

    monkeypatch.setattr(gpu_check, "run_command", run_command)
    monkeypatch.setattr(gpu_check, "SUMMARIZE", {**gpu_check.SUMMARIZE, "soft": lambda raw: {}})
    (work / "soft.json").write_text("{}")
    clock = SimpleNamespace(perf_counter=lambda: 1000.0, strftime=time.strftime)
    monkeypatch.setattr(gpu_check, "time", clock)
    t_start = 1000.0 - (args.budget - gpu_check.STOP_GRACE_S - gpu_check.SHORTEST_STAGE_S)  # 10 s to run in
    gpu_check.run_stages(args, stages, report, work, None, t_start, tmp_path / "r.json", tmp_path / "r.txt")
    assert limits == {"soft": gpu_check.SHORTEST_STAGE_S} and report["stages"]["soft"]["status"] == "ok"
    argv = ["--device", "cpu", "--quick", "--output-dir", str(tmp_path)]
    assert gpu_check.parse_args([*argv, "--budget", "50"]).budget == 50
    with pytest.raises(SystemExit):
        gpu_check.parse_args([*argv, "--budget", "49.9"])


@pytest.mark.parametrize("status", ["timeout", "interrupted", "failed"])
def test_record_run_keeps_the_log_tail_of_its_kind_and_a_stopped_benchmarks_raw_result(status, tmp_path):
    """A tests stage keeps TEST_LOG_TAIL characters of its log, a benchmark LOG_TAIL; a benchmark that did
    not finish ok keeps the result file it left, raw (whatever stopped it)."""
    _args, stages, _report, work = _stage_run_setup(tmp_path)
    output = "x" * (gpu_check.TEST_LOG_TAIL + 100)
    (work / "joint.json").write_text(json.dumps({"k": {"rows": []}}))
    entry: dict = {}
    gpu_check.record_run(entry, "joint", stages["joint"], gpu_check.StageRun(status, 1.0, None, output, "e"))
    assert len(entry["log_tail"]) == gpu_check.LOG_TAIL and entry["raw"] == {"k": {"rows": []}}
    tests_args = gpu_check.parse_args(["--device", "cpu", "--quick", "--output-dir", str(tmp_path)])
    tests = gpu_check.build_stages(tests_args, work)["tests"]
    entry = {}
    gpu_check.record_run(entry, "tests", tests, gpu_check.StageRun(status, 1.0, None, output, "e"))
    assert len(entry["log_tail"]) == gpu_check.TEST_LOG_TAIL > gpu_check.LOG_TAIL


@pytest.mark.skipif(not hasattr(os, "kill"), reason="a stage killed by a signal: POSIX")
def test_a_stage_killed_by_a_signal_is_not_ok():
    """A stage whose process is killed by a signal (the kernel's out-of-memory killer, a segfault: a negative
    return code) did not finish ok: it is recorded as failed with its exit status, not as ok."""
    code = "import os, signal; print('step 1', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    run = gpu_check.run_command([sys.executable, "-c", code], 60, echo=False)
    assert run.returncode == -9
    assert run.status == "failed" and "exit status -9" in run.error


def test_a_failed_stage_without_a_result_file_records_no_raw_result(tmp_path):
    """A failed benchmark keeps the result file it left, raw; one that left none has no ``raw`` entry (not an
    "unreadable" one: there was nothing to read)."""
    assert gpu_check._raw_result(tmp_path / "missing.json") is None
    stage = gpu_check.Stage("joint", "(c) joint", ["x"], tmp_path / "missing.json")
    entry: dict = {}
    run = gpu_check.StageRun("failed", 1.0, 1, "boom\n", "exit status 1: boom")
    gpu_check.record_run(entry, "joint", stage, run)
    assert entry["status"] == "failed" and "raw" not in entry


def test_a_step0_transparency_that_could_not_be_measured_fails_the_train_stage(tmp_path):
    """A train stage whose step-0 transparency raised (``transparency_error`` in ``train_check.json``) did not
    show the joint model transparent: the stage is failed with that error, not ok."""
    result_path = tmp_path / "train_check.json"
    result = _train_result(None)
    del result["transparency"]
    result["transparency_error"] = "RuntimeError: boom"
    _atomic.write_json(result_path, result)
    stage = gpu_check.Stage("train", "(d) joint training run", ["x"], result_path)
    entry: dict = {}
    gpu_check.record_run(entry, "train", stage, gpu_check.StageRun("ok", 1.0, 0, "", None))
    assert entry["status"] == "failed"
    assert entry["error"] == "step-0 transparency: RuntimeError: boom"


def test_train_log_steady_step_time_of_a_short_run_starts_at_the_documented_step(tmp_path):
    """The steady step time runs from the ``k``-th logged step to the last, ``k = min(10, (n - 1) // 2)``:
    two steps (the quick run's) give one interval from the first, four steps start at the second."""
    rows = ["joint,1,1,1.0,,,0.1,1.0,1.0", "joint,1,2,1.0,,,0.1,1.0,3.0"]
    two = gpu_check.read_train_log(_train_log(tmp_path / "two.csv", rows), batch=2)
    assert two["s_per_step"] == pytest.approx(2.0)
    elapsed = [1.0, 9.0, 10.0, 13.0]  # the first step pays for the start-up
    rows = [f"joint,1,{s},1.0,,,0.1,1.0,{t}" for s, t in zip(range(1, 5), elapsed, strict=True)]
    four = gpu_check.read_train_log(_train_log(tmp_path / "four.csv", rows), batch=2)
    assert four["s_per_step"] == pytest.approx(2.0)  # (13 - 9) / (4 - 2): k = 1
