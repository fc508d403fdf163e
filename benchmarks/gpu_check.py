"""One command that checks the project on a CUDA machine: tests, benchmarks, a short training run, targets.

Stages, in this order, each in its own subprocess with its own time limit (a failed or timed-out stage is
recorded with its error and the check goes on with the next one; the exit status is non-zero if any stage
did not finish ok). The issue's items are (a)-(e):

1. ``uniformize`` (b): ``bench_uniformize.py --in-process`` at B=8, C=21, 512x512, N_s 1024 / 4096 / 16384:
   the ``x * 1`` floor, a device-to-device copy of the same bytes, the ``scatter`` and ``sparse`` (CSR)
   backends, ``sparse_coo`` (COO ``torch.sparse.mm``), the paper's per-image COO encoder and a dense one-hot
   ``bmm``; forward, forward+backward, peak memory (``torch.cuda.max_memory_allocated``), CUDA events after
   warm-up.
2. ``joint`` (c): ``bench_joint.py`` with ResNet-101, B=8, 512 px, AMP: the training step of the joint model
   against DeepLabV3+ alone, and each network alone in NCHW and channels_last (``--formats``).
3. ``tests`` (a): every CUDA test (``pytest tests -k cuda``: the tests marked ``cuda``, which is every
   device-parametrized case on CUDA, plus the CUDA-only tests named after it); pass / fail / skip counts and
   the failures. A test module that cannot be imported there counts as one error, and the other tests still
   run (``--continue-on-collection-errors``). The dry run collects the same tree and runs only the cases
   marked ``cuda`` (``-m cuda``: all skipped on the CPU).
4. ``soft`` (c): ``bench_soft.py --in-process`` at B=8, 512x512: soft pool + unpool and SegNet unpooling.
5. ``train`` (d): ``examples/voc_joint/train.py --stage all --amp`` on a synthetic VOC-format set
   (ResNet-101, B=8, 512 px crops, 60 optimizer steps per stage in one epoch, no pretrained weights: nothing
   is downloaded; 8 loader workers, fewer where ``/dev/shm`` cannot hold their batches, as in a container's
   default 64 MiB, and the summary says so); the joint model's transparency at step 0 (joint output against
   the uniformized DeepLabV3+ output, model built from the seg and spixel checkpoints as the joint stage
   builds it, in float32 and under AMP) and the step time of each stage.

The GPU targets are evaluated in the summary (met / not met, with the figure; not evaluated where a figure is
missing, a failed configuration named): uniformize fwd+bwd <= 1.5x the
floor (the backend ``"auto"`` resolves to on the device), the joint step (``joint_hard_ti``) <= 1.3x
DeepLabV3+ alone, zero failing CUDA tests. (e) One JSON (``gpu_check_<device>[_quick].json``: every stage's
command, status, time, figures, raw benchmark JSON and log tail) and a short text summary (``.txt``) go to
``--output-dir``; both are rewritten after every stage, so a check cut short still leaves its results.

The whole check keeps to ``--budget`` seconds (default 440, within 8 minutes with the start-up): a stage's
time limit is cut so that every later stage keeps 30 s, but not below 30 s (where the budget is too short for
that, the earlier stages go first), and the 20 s that stopping a stage at its limit may take stay out of it.
A check stopped by a signal writes its report, with the running stage's output and test outcomes so far,
before it stops that stage. It installs nothing: it needs torch, torchvision,
pytest, hypothesis and scipy, and runs the project from this checkout (first on ``PYTHONPATH`` of every
stage), so no install is needed; pytest-xdist is used when present. Without CUDA it stops with exit status
2, unless ``--device cpu --quick`` is given: that dry run takes the same code paths on the CPU at tiny sizes
(ResNet-18, 64 px, 2 steps, one loader worker, one thread) and is what the test suite and CI run.

Usage::

    python benchmarks/gpu_check.py                          # CUDA machine: everything, about 5-7 minutes
    python benchmarks/gpu_check.py --output-dir /tmp/gpu    # results elsewhere (default benchmarks/results/)
    python benchmarks/gpu_check.py --stages uniformize,joint --budget 200
    python benchmarks/gpu_check.py --device cpu --quick     # CPU dry run (about 1 minute)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _atomic import write_json, write_text_atomic  # the script's folder: run as a file or with it on sys.path

# _atomic put the checkout on sys.path; the cli, signals and wording modules import no torch, as this
# script must not
from examples.voc_joint.cli import output_dir_error
from examples.voc_joint.signals import STOP_SIGNALS, detach_hung_up_output
from examples.voc_joint.wording import counted

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

STAGES = ("uniformize", "joint", "tests", "soft", "train")  # the short, target-bearing benchmarks first
# Per-stage time limits in seconds (full CUDA run / CPU dry run); the whole check also keeps to --budget.
STAGE_LIMITS = {
    "full": {"tests": 180, "uniformize": 100, "joint": 150, "soft": 60, "train": 180},
    "quick": {"tests": 90, "uniformize": 90, "joint": 120, "soft": 90, "train": 150},
}
MIN_STAGE_S = 30  # time kept back for every later stage when a stage's limit is cut to fit the budget
SHORTEST_STAGE_S = 10  # a stage with less time left is not run
# the most that stopping a stage at its time limit can take (_kill_group: 5 s after SIGTERM, 5 s after
# SIGKILL; run_command: 10 s for its output's reader), kept out of the budget's cut so that the check ends
# within --budget
STOP_GRACE_S = 20
UNIFORMIZE_VARIANTS = "floor,copy,scatter,sparse,sparse_coo,paper_coo,dense_bmm"
TARGET_UNIFORMIZE = 1.5  # fwd+bwd / floor
TARGET_JOINT = 1.3  # joint step / DeepLabV3+ step
LOG_TAIL = 6000
TEST_LOG_TAIL = 20000


def _log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def git_revision(root: Path) -> str | None:
    """The checkout's commit (``git rev-parse --short HEAD``), with ``+N changed`` where N tracked files
    differ from it; ``None`` without git or outside a repository.

    A copy of a working tree can carry an older ``.git`` than its files (the last GPU run of 2026-12-04 named
    a commit two behind the code it ran): the count says that the commit alone does not name the code.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = [
            ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln.strip()
        ]
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+{len(changed)} changed" if changed else head


# ------------------------------------------------------------------------------------------ running a stage
@dataclass
class StageRun:
    """Outcome of one subprocess: status ``ok`` / ``failed`` / ``timeout`` / ``error``, time and output."""

    status: str
    seconds: float
    returncode: int | None
    output: str
    error: str | None = None


def run_command(
    cmd: list[str],
    timeout: float,
    log_path: Path | None = None,
    echo: bool = True,
    extra_path: list[Path] | None = None,
    on_stop: Callable[[StageRun], None] | None = None,
) -> StageRun:
    """Run ``cmd`` in its own process group, stream its output (prefixed); kill the group on ``timeout``.

    The child sees the repository (and ``extra_path``) first on ``PYTHONPATH``. Where the check itself is
    stopped (Ctrl-C, SIGTERM, SIGHUP: a ``KeyboardInterrupt`` here), ``on_stop`` first gets the stage's run so
    far (status ``interrupted``, its output until then), then the stage's processes are killed and the
    interrupt goes on.
    """
    env = dict(os.environ)
    paths = [str(ROOT), *map(str, extra_path or []), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    lines: list[str] = []
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        return StageRun("error", 0.0, None, "", f"could not start {cmd[:3]}: {exc}")
    log = log_path.open("w") if log_path is not None else None

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if log is not None:
                log.write(line)
            if echo:
                print(f"    | {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status, error = "ok", None

    def stopped() -> None:
        # Ctrl-C, SIGTERM or SIGHUP of the check: what the stage printed is recorded first (a SIGKILL may
        # follow the signal before the stage's processes are down), then they go down with the check
        try:
            if on_stop is not None:
                partial = StageRun(
                    "interrupted", time.perf_counter() - t0, None, "".join(list(lines)), "interrupted"
                )
                with contextlib.suppress(Exception):  # the interrupt goes on whatever the record does
                    on_stop(partial)
        finally:
            _kill_group(proc)

    try:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status, error = "timeout", f"killed after its time limit of {timeout:.0f} s"
            try:
                _kill_group(proc)
            except BaseException:  # stopped while stopping the stage: the same record, the kill finished
                stopped()
                raise
        except BaseException:
            stopped()
            raise
    finally:
        reader.join(timeout=10)
        # the pipe and the log are closed once the reader is done with them (a process that left the group
        # and still holds the pipe keeps the reader, a daemon thread, reading: both stay open for it then)
        if not reader.is_alive():
            assert proc.stdout is not None
            proc.stdout.close()
            if log is not None:
                log.close()
    output = "".join(lines)
    if status == "ok" and proc.returncode != 0:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
        status, error = "failed", f"exit status {proc.returncode}: " + " / ".join(tail)[-800:]
    return StageRun(status, time.perf_counter() - t0, proc.returncode, output, error)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a stage: SIGTERM, then SIGKILL to its process group; where there are no process groups
    (Windows) terminate and kill the stage's own process.

    The SIGKILL goes to the group while any of its processes is left after the SIGTERM, not only while the
    stage's own process is: the train stage's own process dies at once, while the ``train.py`` it started
    takes SIGTERM as a request to finish its step and save a checkpoint (with its loader workers), and was
    left running past the stage, holding the output pipe (10 s more of the reader's wait).
    """
    posix = hasattr(os, "killpg") and hasattr(signal, "SIGKILL")
    for step, wait in ((0, 5.0), (1, 5.0)):
        try:
            if posix:
                os.killpg(proc.pid, (signal.SIGTERM, signal.SIGKILL)[step])
            elif proc.poll() is None:
                (proc.terminate, proc.kill)[step]()
            else:
                return
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not posix or step == 1:
            return
        deadline = time.monotonic() + wait  # the group's other processes: the rest of the same grace time
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(proc.pid):
            return


def _group_alive(pgid: int) -> bool:
    """Whether the process group ``pgid`` still has a process (an exited one not yet reaped counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group that changed its user: still there
        return True
    return True


TQDM_STAND_IN = '''"""A no-op stand-in for tqdm's progress bar, written by benchmarks/gpu_check.py."""


class tqdm:
    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def set_description(self, *args, **kwargs):
        pass

    def close(self):
        pass
'''


def tqdm_stand_in(work: Path) -> Path | None:
    """Where tqdm is not installed, a folder holding a no-op ``tqdm`` / ``tqdm.auto`` for the children.

    tqdm belongs to the ``examples`` extra (progress bars only), and a GPU machine with torch and torchvision
    may lack it; the stand-in keeps a missing progress bar from failing a CUDA test. Returns None if tqdm is
    importable.
    """
    if _has_module("tqdm"):
        return None
    folder = work / "stand_ins"
    (folder / "tqdm").mkdir(parents=True, exist_ok=True)
    (folder / "tqdm" / "__init__.py").write_text(TQDM_STAND_IN)
    (folder / "tqdm" / "auto.py").write_text('from tqdm import tqdm\n\n__all__ = ["tqdm"]\n')
    return folder


def stage_timeout(limit: float, remaining: float, later_stages: int) -> float:
    """The time a stage may take: its own limit, cut so that every later stage keeps ``MIN_STAGE_S``, but
    never below ``MIN_STAGE_S`` (or what is left): where the budget cannot keep that much for every stage,
    the later stages give way (the stages run in order of importance, the target-bearing ones first).

    The limit never shrinks as ``remaining`` grows (a budget with room for one more later stage gave the
    first stage 10 s where one 10 s shorter gave it 100 s).
    """
    cut = max(remaining - MIN_STAGE_S * later_stages, min(remaining, MIN_STAGE_S))
    return max(0.0, min(limit, cut))


# ------------------------------------------------------------------------------------------ test results
def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and failures from a pytest ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            tag = "failure" if "failure" in kinds else "error"
            counts["failed" if tag == "failure" else "errors"] += 1
            node = case.find(tag)
            message = (node.get("message") or node.text or "") if node is not None else ""
            failures.append({"test": name, "kind": tag, "message": message.strip()[:400]})
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures, "source": "junitxml"}


# (a test id runs to the outcome, or to the end of the line: parameters may hold spaces, "[... --device
# cuda]"; cut at the first space, such ids merged into one and the counts fell, 34 of 52 tests with xdist)
_VERBOSE = re.compile(r"^(?P<test>\S+::.+?)\s+(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_VERBOSE_XDIST = re.compile(
    r"^\[gw\d+\]\s+(?:\[\s*\d+%\]\s+)?(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(?P<test>\S+::.*\S)"
)


def parse_verbose_log(text: str) -> dict[str, Any]:
    """Counts from ``pytest -v`` lines (with or without xdist): the fallback when pytest was killed."""
    outcomes: dict[str, str] = {}
    for line in text.splitlines():
        m = _VERBOSE.match(line.strip()) or _VERBOSE_XDIST.match(line.strip())
        if m:
            outcomes[m.group("test")] = m.group("outcome")
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors"}
    for outcome in outcomes.values():
        counts[key.get(outcome, "skipped")] += 1
    failures = [
        {"test": t, "kind": o.lower(), "message": ""} for t, o in outcomes.items() if o in ("FAILED", "ERROR")
    ]
    return {**counts, "failures": failures, "source": "verbose log (partial if the run was cut short)"}


def _raw_result(path: Path) -> Any:
    """The JSON a failed stage left at ``path`` (``None`` without one; the error's text if it cannot be
    read)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001 (what a failed stage left is recorded, whatever it is)
        return {"unreadable": f"{type(exc).__name__}: {exc}"[:600]}


# ------------------------------------------------------------------------------------------ stage commands
@dataclass
class Stage:
    """A stage: its command, where its JSON result lands and how to read it."""

    name: str
    title: str
    cmd: list[str]
    result_path: Path | None
    notes: list[str] = field(default_factory=list)


def _bench_joint_has_amp() -> bool:
    return '"--amp"' in (BENCH / "bench_joint.py").read_text()


def build_stages(args: argparse.Namespace, work: Path) -> dict[str, Stage]:
    py = sys.executable
    quick, dev = args.quick, args.device
    cuda = dev.startswith("cuda")
    stages: dict[str, Stage] = {}

    pytest_cmd = [py, "-m", "pytest", "-k", "cuda", "-v", "--tb=short", "-rfE", "-p", "no:cacheprovider"]
    # a test module that cannot be imported on this machine (a package the GPU image lacks) is one error in
    # the counts; without this flag pytest stops after collection and no CUDA test runs at all
    pytest_cmd += ["--continue-on-collection-errors", f"--junitxml={work / 'junit.xml'}"]
    notes = []
    if cuda and not quick and _has_module("xdist"):
        pytest_cmd += ["-n", "4"]
        notes.append("pytest-xdist present: 4 workers")
    if quick:  # the same tree is collected (every test module imported, as on the GPU), only the cases
        pytest_cmd += ["-m", "cuda"]  # marked cuda run: all skipped on the CPU, in about 10 s
    pytest_cmd += ["tests"]
    stages["tests"] = Stage("tests", "(a) CUDA tests", pytest_cmd, work / "junit.xml", notes)

    cmd = [py, str(BENCH / "bench_uniformize.py"), "--device", dev, "--in-process", "--no-voronoi"]
    cmd += ["--variants", UNIFORMIZE_VARIANTS, "--out", str(work / "uniformize.json")]
    if quick:
        cmd += ["--quick", "--repeats", "2", "--threads", "1"]
    else:
        cmd += ["--batch-size", "8", "--num-superpixels", "1024,4096,16384", "--repeats", "10"]
        cmd += ["--dense-max-gb", "12"]
    stages["uniformize"] = Stage("uniformize", "(b) uniformize", cmd, work / "uniformize.json")

    cmd = [py, str(BENCH / "bench_joint.py"), "--device", dev]
    notes = []
    if cuda:
        if _bench_joint_has_amp():
            cmd.append("--amp")
        else:
            notes.append("bench_joint.py has no --amp option: ran in float32")
    else:
        notes.append("CPU dry run: float32 (AMP is CUDA-only)")
    if quick:
        cmd += [
            "--backbone",
            "resnet18",
            "--batch-size",
            "2",
            "--size",
            "64",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--threads",
            "1",
        ]
    else:
        cmd += ["--backbone", "resnet101", "--batch-size", "8", "--size", "512"]
    cmd += ["--formats"]  # each network alone in NCHW and channels_last: evidence for the default format
    cmd += ["--out", str(work / "joint.json")]
    stages["joint"] = Stage("joint", "(c) joint training step", cmd, work / "joint.json", notes)

    cmd = [
        py,
        str(BENCH / "bench_soft.py"),
        "--device",
        dev,
        "--in-process",
        "--out",
        str(work / "soft.json"),
    ]
    cmd += ["--quick", "--threads", "1"] if quick else ["--batch-size", "8"]
    stages["soft"] = Stage("soft", "(c) soft association and SegNet unpooling", cmd, work / "soft.json")

    cmd = [py, str(Path(__file__).resolve()), "--device", dev, "--_train", str(work / "train")]
    cmd += ["--quick"] if quick else []
    stages["train"] = Stage("train", "(d) joint training run", cmd, work / "train" / "train_check.json")
    return stages


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ reading results
def summarize_tests(stage: Stage, run: StageRun) -> dict[str, Any]:
    assert stage.result_path is not None
    if stage.result_path.is_file():
        try:
            return parse_junit(stage.result_path)
        except ET.ParseError:
            pass
    return parse_verbose_log(run.output)


def summarize_uniformize(raw: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for entry in raw["configs"]:
        res = entry["results"]

        def fig(variant: str, key: str, res: dict[str, Any] = res) -> float | None:
            value = res.get(variant, {}).get(key)
            return None if value is None else float(value)

        row: dict[str, Any] = {
            "name": entry["name"],
            "N_s": entry["config"]["N_s"],
            "B": entry["config"]["B"],
        }
        for variant in res:
            row[variant] = {
                "fwd_ms": fig(variant, "fwd_ms"),
                "fwd_bwd_ms": fig(variant, "fwd_bwd_ms"),
                "setup_ms": fig(variant, "setup_ms"),
                "x_floor": fig(variant, "x_floor"),
                "peak_extra_mb": fig(variant, "peak_extra_mb"),
                "max_abs_err": fig(variant, "max_abs_err"),
                "max_abs_err_grad": fig(variant, "max_abs_err_grad"),
                "skipped": res[variant].get("skipped"),
            }
        row["scatter_paired_x_floor"] = fig("scatter", "paired_x_floor")
        backends = {
            v: row[v]["fwd_bwd_ms"] for v in ("scatter", "sparse") if v in row and row[v]["fwd_bwd_ms"]
        }
        row["fastest_backend"] = min(backends, key=lambda v: backends[v]) if backends else None
        rows.append(row)
    return {"auto_backend": raw["meta"].get("auto_backend"), "rows": rows, "sweep": raw.get("sweep")}


def summarize_joint(raw: dict[str, Any]) -> dict[str, Any]:
    entries = [v for v in raw.values() if isinstance(v, dict) and "rows" in v]
    entry = entries[-1]  # a fresh file: one entry (device, backbone, batch, size)
    rows = {r["variant"]: r for r in entry["rows"]}
    return {
        "config": entry.get("config"),
        "ratios": {v: float(r["time_ratio"]) for v, r in rows.items()},
        "step_ms": {v: 1e3 * float(r["median_s"]) for v, r in rows.items()},
        "memory_ratios": {v: r.get("memory_ratio") for v, r in rows.items()},
        # channels_last / NCHW step of each network alone (paired; below 1: channels_last wins)
        "channels_last_ratios": {r["network"]: r["time_ratio_paired"] for r in entry.get("formats", [])},
    }


def summarize_soft(raw: dict[str, Any]) -> dict[str, Any]:
    soft: dict[str, dict[str, float]] = {}
    for r in raw["soft"]["rows"]:
        soft.setdefault(str(r["C"]), {})[r["impl"]] = float(r["median_ms"])
    return {
        "max_abs_diff_f64": raw["soft"]["max_abs_diff_f64"],
        "soft_ms": soft,
        "segnet_paired_ratio_to_nn": raw["segnet_unpool"]["paired_ratio_to_nn"],
    }


SUMMARIZE = {"uniformize": summarize_uniformize, "joint": summarize_joint, "soft": summarize_soft}


# ------------------------------------------------------------------------------------------ targets
def _skip_reason(row: dict[str, Any], backend: str) -> str:
    """Why a uniformize row has no ratio for ``backend``: its own or the floor's recorded failure."""
    return str(row.get(backend, {}).get("skipped") or row.get("floor", {}).get("skipped") or "no figure")


def evaluate_targets(stages: dict[str, dict[str, Any]], on_gpu: bool) -> list[dict[str, Any]]:
    """Every GPU target with its figure; ``met`` is None where the figure is missing or ``on_gpu`` is False
    (no full GPU run: the CPU dry run, or ``--quick``'s tiny sizes, which are not the targets' sizes)."""
    out = []

    def target(name: str, met: bool | None, figure: str) -> None:
        out.append({"target": name, "met": met if on_gpu else None, "figure": figure})

    uni = stages.get("uniformize", {}).get("summary")
    name = f"uniformize fwd+bwd <= {TARGET_UNIFORMIZE}x the x * 1 floor (B=8, C=21, 512x512)"
    if uni and uni["rows"]:
        backend = uni.get("auto_backend") or "scatter"
        ratios = [(r[backend]["x_floor"], r["N_s"]) for r in uni["rows"] if r.get(backend, {}).get("x_floor")]
        # a configuration without a figure (its backend or its floor failed, e.g. out of memory) leaves the
        # target not evaluated unless a configuration with a figure already misses it
        missing = [
            f"N_s={r['N_s']} ({_skip_reason(r, backend)})"
            for r in uni["rows"]
            if not r.get(backend, {}).get("x_floor")
        ]
        if ratios:
            worst = max(x for x, _ in ratios)
            each = ", ".join(f"N_s={n}: {x:.2f}x" for x, n in ratios)
            met = False if worst > TARGET_UNIFORMIZE else (None if missing else True)
            figure = f"backend {backend!r} ('auto'): {each}; worst {worst:.2f}x"
            target(name, met, figure + (f"; without a figure: {', '.join(missing)}" if missing else ""))
        else:
            target(name, None, f"no {backend!r} figure: {', '.join(missing)}")
    else:
        target(name, None, "stage did not produce figures")

    joint = stages.get("joint", {}).get("summary")
    name = f"joint training step <= {TARGET_JOINT}x DeepLabV3+ alone (ResNet-101, B=8, 512 px, AMP)"
    if joint and "joint_hard_ti" in joint["ratios"]:
        r = joint["ratios"]["joint_hard_ti"]
        others = ", ".join(f"{v} {x:.2f}x" for v, x in joint["ratios"].items() if v != "deeplab")
        target(name, r <= TARGET_JOINT, f"joint_hard_ti {r:.2f}x ({others})")
    else:
        target(name, None, "stage did not produce figures")

    tests = stages.get("tests", {}).get("summary")
    name = "zero failing CUDA tests"
    if tests:
        bad = tests["failed"] + tests["errors"]
        status = stages["tests"]["status"]
        # pytest's exit status 1: the whole run finished, with failures (counted in full, not cut short)
        finished = status == "ok" or (status == "failed" and stages["tests"].get("returncode") == 1)
        complete = status == "ok" or bad > 0
        met = (bad == 0 and tests["passed"] > 0 and complete) if complete else None
        target(
            name,
            met,
            f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped" + ("" if finished else " (cut short)"),
        )
    else:
        target(name, None, "stage did not produce figures")
    return out


# ------------------------------------------------------------------------------------------ report
def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``; ``None`` (a figure the JSON holds as ``null``: NaN or infinite, as
    ``write_json`` writes it) as ``nan``."""
    return "nan" if value is None else format(value, spec)


def render_summary(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"transinit GPU check ({'dry run, ' if not report['on_gpu'] else ''}device {meta['device']}"
        f"{', quick' if meta['quick'] else ''}): {meta.get('cuda_device') or meta['platform']}, "
        f"torch {meta['torch']}, {meta['time']}, git {meta.get('git') or '?'}",
        f"total {report.get('seconds', 0):.0f} s of a {meta['budget_s']:.0f} s budget; exit status "
        f"{report.get('exit_status', '?')}",
        *[f"note: {n}" for n in meta.get("notes", [])],
        "",
        "stages:",
    ]
    for name, st in report["stages"].items():
        err = f": {st['error']}" if st.get("error") else ""
        lines.append(f"  {name:<11} {st['status']:<10} {st.get('seconds', 0):6.1f} s{err}")
        lines += [f"              note: {n}" for n in st.get("notes", [])]
    st = report["stages"]
    if st.get("tests", {}).get("summary"):
        t = st["tests"]["summary"]
        lines += [
            "",
            f"(a) CUDA tests: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
            f"{t['skipped']} skipped ({t['source']})",
        ]
        lines += [f"    {f['kind']}: {f['test']} {f['message'][:160]}" for f in t["failures"][:20]]
    if st.get("uniformize", {}).get("summary"):
        u = st["uniformize"]["summary"]
        variants = [v for v in UNIFORMIZE_VARIANTS.split(",") if any(v in r for r in u["rows"])]
        lines += ["", f"(b) uniformize fwd+bwd ms (x floor); 'auto' resolves to {u.get('auto_backend')!r}:"]
        lines.append(f"    {'config':<30}" + "".join(f"{v:>17}" for v in variants))
        for r in u["rows"]:
            cells = []
            for v in variants:
                c = r.get(v, {})
                if c.get("skipped"):
                    cells.append(f"{'skipped':>17}")
                else:
                    x = c.get("x_floor")
                    cells.append(f"{_fmt_ms(c.get('fwd_bwd_ms')) + (f' ({x:.2f}x)' if x else ''):>17}")
            lines.append(f"    {r['name']:<30}" + "".join(cells))
        peaks = [
            f"N_s={r['N_s']}: "
            + ", ".join(
                f"{v} {r[v]['peak_extra_mb']:.0f}"
                for v in variants
                if r.get(v, {}).get("peak_extra_mb") is not None
            )
            for r in u["rows"]
            if any(r.get(v, {}).get("peak_extra_mb") is not None for v in variants)
        ]
        if peaks:
            lines.append("    peak extra MiB: " + "; ".join(peaks))
        lines.append(
            "    fastest library backend: "
            + ", ".join(f"N_s={r['N_s']}: {r['fastest_backend']}" for r in u["rows"])
        )
    if st.get("joint", {}).get("summary"):
        j = st["joint"]["summary"]
        lines += [
            "",
            "(c) joint training step, ms (x DeepLabV3+ alone): "
            + ", ".join(f"{v} {j['step_ms'][v]:.1f} ({j['ratios'][v]:.2f}x)" for v in j["ratios"]),
        ]
        if j.get("channels_last_ratios"):
            lines.append(
                "    channels_last / NCHW step, each network alone (paired): "
                + ", ".join(f"{n} {_fmt(r, '.2f')}x" for n, r in j["channels_last_ratios"].items())
            )
    if st.get("soft", {}).get("summary"):
        s = st["soft"]["summary"]
        lines += [
            "",
            "(c) soft pool+unpool fwd+bwd ms: "
            + "; ".join(
                f"C={c}: " + ", ".join(f"{k} {v:.2f}" for k, v in impls.items())
                for c, impls in s["soft_ms"].items()
            )
            + f"; SegNet unpool / nn.MaxUnpool2d (paired) {_fmt(s['segnet_paired_ratio_to_nn'], '.2f')}x",
        ]
    if st.get("train", {}).get("summary"):
        tr = st["train"]["summary"]
        lines += ["", f"(d) training run ({tr['config']}):"]
        for stage_name, sp in tr["stages"].items():
            lines.append(
                f"    {stage_name:<7} {sp['steps']} steps, {_fmt(sp['wall_s'], '.1f')} s; steady "
                f"{_fmt_ms(sp['s_per_step'] and 1e3 * sp['s_per_step'])} ms/step, "
                f"{_fmt_ms(sp['images_per_s'])} img/s; loss {sp['first_loss']} -> {sp['last_loss']}"
            )
        if tr.get("joint_over_seg") is not None:
            lines.append(f"    joint / seg step time in this run: {tr['joint_over_seg']:.2f}x")
        for mode, t in (tr.get("transparency") or {}).items():
            lines.append(
                f"    step-0 transparency ({mode}): max |joint - U(DeepLabV3+)| = "
                f"{_fmt(t['max_abs_diff'], '.3g')} "
                f"(max |logit| {_fmt(t['max_abs_logit'], '.3g')}, relative {_fmt(t['relative'], '.3g')})"
            )
        if tr.get("transparency_error"):
            lines.append(f"    step-0 transparency: failed: {tr['transparency_error']}")
    lines += ["", "targets:"]
    for t in report["targets"]:
        mark = {True: "met", False: "NOT MET", None: "not evaluated"}[t["met"]]
        lines.append(f"  [{mark}] {t['target']}: {t['figure']}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ the train stage
#: Bytes per pixel of one training sample: ``image``, ``seg_input`` and ``spixel_input`` (3 x float32 each)
#: and ``target`` (int64).
SAMPLE_BYTES_PER_PIXEL = 3 * 3 * 4 + 8
LOADER_PREFETCH = 2  # batches a DataLoader worker keeps ready (torch's default prefetch_factor)


def loader_workers(want: int, batch: int, crop: int, shm: str = "/dev/shm") -> tuple[int, str | None]:
    """Loader workers for the train stage that fit in shared memory, and a note where fewer than ``want``.

    Every worker hands its batches to the main process through ``/dev/shm``, up to ``LOADER_PREFETCH`` at a
    time: 2 x 88 MiB at B=8, 512 px. A container's default ``/dev/shm`` of 64 MiB cannot hold one: the
    workers die with a bus error and the stage fails. Fewer workers (down to 0, loading in the main process)
    keep the stage running; the step times then include more of the loading, which the note says.
    """
    if want <= 0:
        return 0, None
    per_worker = 1.5 * LOADER_PREFETCH * batch * crop * crop * SAMPLE_BYTES_PER_PIXEL  # 1.5: allocator slack
    try:
        free = shutil.disk_usage(shm).free
    except OSError:
        return 0, f"no {shm}: the training loader runs in the main process (0 workers instead of {want})"
    workers = min(want, int(free // per_worker))
    if workers == want:
        return want, None
    return workers, (
        f"{shm} has {free / 2**20:.0f} MiB free, {per_worker / 2**20:.0f} MiB needed per loader worker: "
        f"{workers} workers instead of {want} (step times include more of the data loading)"
    )


def train_check(device: str, quick: bool, work: Path) -> dict[str, Any]:
    """Stage (d), run in its own process: data, ``train.py --stage all``, step-0 transparency, speed."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    if quick:  # one loader worker: the dry run takes the worker processes of the CUDA run too
        steps, batch, crop, backbone, workers = 2, 2, 64, "resnet18", 1
    else:
        steps, batch, crop, backbone, workers = 60, 8, 512, "resnet101", 8
    workers, loader_note = loader_workers(workers, batch, crop)
    if loader_note:
        print(f"note: {loader_note}", flush=True)
    cuda = device.startswith("cuda")
    amp = cuda
    config = f"{backbone}, B={batch}, {crop} px crops, {steps} steps per stage, AMP {amp}, {device}"
    config += f", {workers} loader workers" + (f" ({loader_note})" if loader_note else "")
    from examples.voc_joint.synthetic import generate_synthetic_voc

    t0 = time.perf_counter()
    # One epoch covers the steps: no end-of-epoch checkpoint or loader restart inside the timed steps.
    root = generate_synthetic_voc(work / "data", num_train=steps * batch, num_val=1, sbd=False, seed=0)
    data_s = time.perf_counter() - t0
    print(f"synthetic set: {steps * batch} training images in {data_s:.1f} s", flush=True)

    common = ["--data-root", str(root), "--batch-size", str(batch), "--crop-size", str(crop)]
    common += ["--backbone", backbone, "--device", device, "--seed", "0"]
    cmd = [sys.executable, str(ROOT / "examples" / "voc_joint" / "train.py"), "--stage", "all", *common]
    cmd += ["--output-dir", str(work / "run"), "--max-steps", str(steps), "--epochs", "1"]
    cmd += ["--workers", str(workers), "--log-every", "1", "--no-progress"]
    cmd += ["--amp"] if amp else ["--threads", "1"]
    print("running: " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    train_s = time.perf_counter() - t0

    result: dict[str, Any] = {"config": config, "data_s": data_s, "train_wall_s": train_s, "stages": {}}
    for stage in ("seg", "spixel", "joint"):
        result["stages"][stage] = read_train_log(work / "run" / stage / "log.csv", batch)
    seg, joint = result["stages"]["seg"]["s_per_step"], result["stages"]["joint"]["s_per_step"]
    result["joint_over_seg"] = joint / seg if seg and joint else None
    try:
        result["transparency"] = step0_transparency(
            common,
            work / "run" / "seg" / "checkpoint.pt",
            work / "run" / "spixel" / "checkpoint.pt",
            root,
            batch,
            crop,
            torch.device(device),
            amp,
        )
    except Exception as exc:  # noqa: BLE001 (the speed figures stand; the failure is reported)
        result["transparency_error"] = f"{type(exc).__name__}: {exc}"[:600]
    return result


def read_train_log(path: Path, batch: int) -> dict[str, Any]:
    """Steps, wall time, steady step time and first / last loss of a stage, from its ``log.csv``.

    The steady step time is measured from the ``k``-th logged step to the last, ``k = min(10, (n - 1) // 2)``
    (the first steps pay for cuDNN autotuning, allocator growth and the loader's start).
    """
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("step")]
    rows.sort(key=lambda r: int(r["step"]))
    steps = [int(r["step"]) for r in rows]
    elapsed = [float(r["elapsed_s"]) for r in rows]
    s_per_step = None
    if len(rows) >= 2:
        k = min(10, (len(rows) - 1) // 2)
        dt = elapsed[-1] - elapsed[k]
        s_per_step = dt / (steps[-1] - steps[k]) if dt > 0 and steps[-1] > steps[k] else None
    return {
        "steps": steps[-1] if steps else 0,
        "wall_s": elapsed[-1] if elapsed else 0.0,
        "s_per_step": s_per_step,
        "images_per_s": batch / s_per_step if s_per_step else None,
        "first_loss": rows[0]["loss"] if rows else None,
        "last_loss": rows[-1]["loss"] if rows else None,
    }


def step0_transparency(
    common: list[str],
    seg_ckpt: Path,
    spixel_ckpt: Path,
    root: Path,
    batch: int,
    crop: int,
    device: Any,
    amp: bool,
) -> dict[str, dict[str, float]]:
    """The joint stage's model at step 0 (built from the checkpoints as the CLI builds it) on one batch.

    Compares the final logits with the uniformized DeepLabV3+ logits of the same forward pass: the transparent
    fusion stack starts as ``F([S, U(S)]) = U(S)``, so the two agree up to rounding.
    """
    import torch

    import sparse_ops
    from examples.voc_joint import data
    from examples.voc_joint import train as train_cli
    from examples.voc_joint.train_options import build_parser, resolve_stage_options, runtime_options

    argv = [
        "--stage",
        "joint",
        *common,
        "--seg-checkpoint",
        str(seg_ckpt),
        "--spixel-checkpoint",
        str(spixel_ckpt),
    ]
    args = resolve_stage_options("joint", build_parser().parse_args(argv))
    # the memory format the joint stage trains in (build_train_state resolves the unset option for the device:
    # SpixelFCN in channels_last on CUDA; without it the model was built all NCHW)
    args.channels_last = runtime_options(args, device)["channels_last"]
    model = train_cli.build_stage_model("joint", args).to(device).eval()
    dataset = data.build_dataset(root, "train", crop_size=crop, train=True)
    torch.manual_seed(0)
    sample = next(iter(torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False)))
    seg_in, spx_in = sample["seg_input"].to(device), sample["spixel_input"].to(device)
    out: dict[str, dict[str, float]] = {}
    modes = [("float32", False)] + ([("amp", True)] if amp else [])
    with torch.no_grad():
        for mode, enabled in modes:
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled):
                res = model(seg_in, spx_in)
            s = res["seg_logits"].float()
            h, w = s.shape[-2:]
            ref = sparse_ops.uniformize(
                s, res["superpixels"], sparse_ops.num_grid_cells(h, w, model.cell_size)
            )
            diff = float((res["logits"].float() - ref).abs().max())
            peak = float(s.abs().max())
            out[mode] = {"max_abs_diff": diff, "max_abs_logit": peak, "relative": diff / max(peak, 1e-30)}
    return out


# ------------------------------------------------------------------------------------------ main
def _environment(device: str) -> dict[str, Any]:
    import platform

    import torch

    load = None  # the 1-minute load average; none on Windows
    with contextlib.suppress(AttributeError, OSError):
        load = os.getloadavg()[0]
    meta: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": load,
    }
    from importlib import metadata

    versions = {}
    for package in (
        "torchvision",
        "numpy",
        "scipy",
        "pytest",
        "hypothesis",
        "pytest-xdist",
        "tqdm",
        "pillow",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    meta["packages"] = versions
    meta["git"] = git_revision(ROOT)
    if device.startswith("cuda"):
        meta["cuda_device"] = torch.cuda.get_device_name(torch.device(device))  # the one measured (cuda:N)
        meta["cuda_runtime"] = torch.version.cuda
        meta["cuda_devices"] = torch.cuda.device_count()
        if shutil.which("nvidia-smi"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                meta["nvidia_smi"] = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                        "--format=csv,noheader",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=20,
                ).stdout.strip()
    return meta


def output_dir_arg(text: str) -> Path:
    """``type=`` of ``--output-dir``: a folder path, not the empty string (an unset shell variable, which
    ``Path`` would take as the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The check's command line (``python benchmarks/gpu_check.py --help``)."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--device", default="cuda", help="cuda, or cpu with --quick only (the dry run) (default: cuda)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run): no target is judged")
    p.add_argument(
        "--output-dir",
        type=output_dir_arg,
        default=ROOT / "benchmarks" / "results",
        help="folder of the results (default: benchmarks/results)",
    )
    p.add_argument(
        "--budget", type=float, default=None, help="seconds for the whole check (default: 440; quick 400)"
    )
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (default: all)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the work folder (checkpoints, raw logs)")
    p.add_argument("--_train", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks of ``--stages``, ``--device``, ``--budget`` and ``--output-dir`` (``p.error``: exit status
    2)."""
    unknown = sorted({s for s in args.stages.split(",") if s} - set(STAGES))
    if unknown:
        p.error(f"--stages: unknown {unknown}; choose from {list(STAGES)}")
    if not any(args.stages.split(",")):
        p.error(f"--stages names no stage; choose from {list(STAGES)}")
    if not re.fullmatch(r"cuda(:[0-9]+)?|cpu", args.device):  # not "cuda:-1", "cuda: 0" (torch refuses them)
        p.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if args.budget is not None and not (args.budget > 0 and args.budget != float("inf")):
        p.error(f"--budget must be a finite number of seconds > 0, got {args.budget}")
    least = MIN_STAGE_S + STOP_GRACE_S  # less: no stage gets its 30 s after the start-up, exit status 1
    if args.budget is not None and args.budget < least:
        p.error(
            f"--budget must be at least {least} s (a stage's 30 s and the time to stop it), got {args.budget}"
        )
    try:
        is_file = args.output_dir.exists() and not args.output_dir.is_dir()
        blocker = next((q for q in args.output_dir.parents if q.exists() and not q.is_dir()), None)
    except OSError as exc:  # a name too long for the system, ...: not a traceback
        p.error(f"--output-dir must be a folder, got {str(args.output_dir)!r}: {exc.strerror}")
    if is_file:
        p.error(f"--output-dir must be a folder, got the file {str(args.output_dir)!r}")
    if blocker is not None:  # the folder cannot be made (NotADirectoryError: a traceback before)
        p.error(f"--output-dir {str(args.output_dir)!r} lies below the file {str(blocker)!r}")
    # a folder this user may not write in: a PermissionError traceback at the first report, after a stage ran
    # (not for the train stage's own process, which writes no report and is given the default folder)
    error = output_dir_error(args.output_dir) if args._train is None else None
    if error is not None:
        p.error(f"--output-dir: {error}")
    if args.device == "cpu" and not args.quick:
        p.error("--device cpu is only the dry run: pass --device cpu --quick (the GPU figures need CUDA)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The checked options, with ``stage_list`` (the stages in run order) and the default budget filled in."""
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    args.stage_list = [s for s in STAGES if s in args.stages.split(",")]
    if args.budget is None:
        args.budget = 400.0 if args.quick else 440.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._train is not None:
        result = train_check(args.device, args.quick, args._train)
        write_json(args._train / "train_check.json", result)
        print(json.dumps(result, indent=1))
        return 0

    t_start = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: CUDA is not available (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda}, {torch.cuda.device_count()} devices visible). Run it on a CUDA machine, "
            "or pass --device cpu --quick for the CPU dry run.",
            file=sys.stderr,
        )
        return 2
    on_gpu = args.device.startswith("cuda")
    index = int(args.device.partition(":")[2] or 0)  # check_args: cuda, cuda:N (digits) or cpu
    if on_gpu and index >= torch.cuda.device_count():  # torch: "AssertionError: Invalid device id"
        print(
            f"gpu_check: --device {args.device}: this machine has "
            f"{counted(torch.cuda.device_count(), 'CUDA device')} "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})",
            file=sys.stderr,
        )
        return 2
    tag = f"gpu_check_{'cuda' if on_gpu else 'cpu'}{'_quick' if args.quick else ''}"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    json_path, txt_path = args.output_dir / f"{tag}.json", args.output_dir / f"{tag}.txt"
    work = Path(tempfile.mkdtemp(prefix="transinit-gpu-check-"))
    meta = _environment(args.device)
    meta.update(device=args.device, quick=args.quick, budget_s=args.budget, work=str(work))
    _log(
        f"{'GPU check' if on_gpu else 'CPU dry run'} on {meta.get('cuda_device') or meta['platform']}, "
        f"torch {meta['torch']}; stages {', '.join(args.stage_list)}; budget {args.budget:.0f} s; work {work}"
    )

    report: dict[str, Any] = {"meta": meta, "on_gpu": on_gpu, "stages": {}, "targets": []}
    stages = build_stages(args, work)
    stand_in = tqdm_stand_in(work)
    if stand_in is not None:
        meta["notes"] = ["tqdm is not installed: the children import a no-op stand-in for its progress bar"]
        _log(meta["notes"][0])

    stopped_by: list[int] = [signal.SIGINT]  # KeyboardInterrupt: Ctrl-C, unless SIGTERM or SIGHUP raised it

    def on_stop(signum: int, frame: object) -> None:
        stopped_by[0] = signum
        if signum == getattr(signal, "SIGHUP", None):
            detach_hung_up_output()  # the terminal may be gone: no EIO on the report's lines
        raise KeyboardInterrupt

    # SIGTERM, and SIGHUP (a closed terminal; not on Windows) as SIGTERM; one started ignored stays ignored
    stops = [sig for sig in STOP_SIGNALS if sig != signal.SIGINT]  # SIGINT: Python's KeyboardInterrupt
    previous = {sig: signal.getsignal(sig) for sig in stops}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, on_stop)
    interrupted = False
    try:
        run_stages(args, stages, report, work, stand_in, t_start, json_path, txt_path)
    except KeyboardInterrupt:
        interrupted = True
        name = signal.Signals(stopped_by[0]).name
        for entry in report["stages"].values():
            if entry.get("status", "interrupted") == "interrupted":  # the running stage, recorded or not
                entry.update(status="interrupted", error=f"the check was interrupted ({name})")
        _log("interrupted: writing what was measured so far")

    bad = [n for n, e in report["stages"].items() if e["status"] != "ok"]
    bad += [n for n in args.stage_list if n not in report["stages"]]  # never started
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    # 128 + the signal, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    report["exit_status"] = 128 + int(stopped_by[0]) if interrupted else 1 if bad else 0
    report["seconds"] = time.perf_counter() - t_start
    report["targets"] = evaluate_targets(report["stages"], on_gpu and not args.quick)
    _write(report, json_path, txt_path)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(txt_path.read_text(), end="")
    _log(f"wrote {json_path} and {txt_path}")
    if bad:
        _log(f"FAILED stages: {', '.join(bad)} (exit status {report['exit_status']})")
    return int(report["exit_status"])


def run_stages(
    args: argparse.Namespace,
    stages: dict[str, Stage],
    report: dict[str, Any],
    work: Path,
    stand_in: Path | None,
    t_start: float,
    json_path: Path,
    txt_path: Path,
) -> None:
    """Run the selected stages in order, each within its time limit; the report is rewritten after each."""
    mode = "quick" if args.quick else "full"
    judged = report["on_gpu"] and not args.quick  # the targets' sizes: a full CUDA run only
    deadline = t_start + args.budget
    for i, name in enumerate(args.stage_list):
        stage = stages[name]
        later = len(args.stage_list) - i - 1
        remaining = deadline - time.perf_counter() - STOP_GRACE_S  # a stage stopped at its limit ends in time
        timeout = stage_timeout(STAGE_LIMITS[mode][name], remaining, later)
        entry: dict[str, Any] = {"title": stage.title, "command": stage.cmd, "notes": stage.notes}
        entry["limit_s"] = timeout
        report["stages"][name] = entry
        if timeout < SHORTEST_STAGE_S:
            entry.update(status="not_run", seconds=0.0, error="no time left in the budget")
            _log(f"stage {i + 1}/{len(args.stage_list)} {name}: not run (no time left)")
            continue
        _log(f"stage {i + 1}/{len(args.stage_list)} {name}: {stage.title}; time limit {timeout:.0f} s")
        _log("  $ " + " ".join(stage.cmd))

        def stopped(partial: StageRun, entry: dict[str, Any] = entry, name: str = name) -> None:
            # the check is being stopped during this stage: its tests' outcomes so far (or the result file it
            # left) and its log's tail are written before the stage is killed
            record_run(entry, name, stages[name], partial)
            report["seconds"] = time.perf_counter() - t_start
            _write(report, json_path, txt_path)

        run = run_command(
            stage.cmd,
            timeout,
            work / f"{name}.log",
            extra_path=[stand_in] if stand_in else None,
            on_stop=stopped,
        )
        record_run(entry, name, stage, run)
        _log(
            f"stage {name}: {entry['status']} in {run.seconds:.1f} s"
            + (f" ({entry['error']})" if entry["error"] else "")
        )
        report["targets"] = evaluate_targets(report["stages"], judged)
        report["seconds"] = time.perf_counter() - t_start
        _write(report, json_path, txt_path)


def record_run(entry: dict[str, Any], name: str, stage: Stage, run: StageRun) -> None:
    """Put a stage's run into its report ``entry``: status, time, log tail, and the summary of its result
    (a tests stage: its outcomes, also from a run cut short; a benchmark that failed: its result file raw)."""
    tail = TEST_LOG_TAIL if name == "tests" else LOG_TAIL
    entry.update(
        status=run.status,
        seconds=run.seconds,
        returncode=run.returncode,
        error=run.error,
        log_tail=run.output[-tail:],
    )
    try:
        if name == "tests":
            entry["summary"] = summarize_tests(stage, run)
        elif run.status == "ok" and stage.result_path is not None:
            raw = json.loads(stage.result_path.read_text())
            entry["raw"] = raw
            entry["summary"] = train_summary(raw) if name == "train" else SUMMARIZE[name](raw)
    except Exception as exc:  # noqa: BLE001 (a result that cannot be read is reported, the check goes on)
        entry.update(status="parse_error", error=f"reading the result: {type(exc).__name__}: {exc}"[:600])
    if run.status != "ok" and name != "tests" and stage.result_path is not None:
        # a stage that failed after writing its result (bench_uniformize.py exits 1 when a variant's error
        # is above its tolerance) keeps that file in the report, raw (the work folder is deleted): its
        # figures judge no target, but a rerun is not needed to see them
        raw = _raw_result(stage.result_path)
        if raw is not None:
            entry["raw"] = raw
    if name == "train" and entry.get("summary", {}).get("transparency_error"):
        entry.update(status="failed", error="step-0 transparency: " + entry["summary"]["transparency_error"])
    elif name == "train" and entry.get("summary", {}).get("transparency"):
        # a NaN or infinite difference (written as null) is no transparency: not an ok stage
        nulls = [
            f"{mode} {key}"
            for mode, figures in entry["summary"]["transparency"].items()
            for key, value in figures.items()
            if value is None
        ]
        if nulls:
            entry.update(
                status="failed",
                error="step-0 transparency: no finite figure (NaN or infinite) for " + ", ".join(nulls),
            )


def train_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        k: raw.get(k) for k in ("config", "stages", "joint_over_seg", "transparency", "transparency_error")
    }


def _write(report: dict[str, Any], json_path: Path, txt_path: Path) -> None:
    write_json(json_path, report)
    write_text_atomic(txt_path, render_summary(report))


if __name__ == "__main__":
    sys.exit(main())
