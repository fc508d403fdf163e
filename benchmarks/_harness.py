"""Shared timing and memory helpers of the benchmark scripts (CPU and CUDA alike).

* :func:`time_ms`: per-run wall times in milliseconds after warm-up runs; ``time.perf_counter`` around
  each run on the CPU, a pair of CUDA events around each run on CUDA (the device is idle when a run starts:
  every run ends with a synchronisation). The scripts take the median of these runs.
* :class:`PeakMemory`: extra memory of a measured region: on CUDA ``torch.cuda.max_memory_allocated`` minus
  the memory allocated when the region starts (peak statistics reset there); on Linux the peak resident set
  size (``VmHWM``) minus the resident set size (``VmRSS``) when the region starts, with the peak reset there
  (``/proc/self/clear_refs``), so memory freed before the region does not hide growth inside it. Elsewhere
  (or where the reset is refused) the growth of ``ru_maxrss``, which only sees growth above the process's
  earlier peak: :attr:`PeakMemory.method` says which. It runs one tiny backward first (once per process,
  :func:`prime_autograd`): a process's first ``backward(gradient)`` imports about 490 modules (sympy,
  ``torch.fx.experimental.symbolic_shapes``), 34 MiB of resident memory that no op's figure should carry.
* :func:`tensor_peak_mib`: the peak of the tensor bytes live at once during one run of a step (every call of
  PyTorch's CPU allocator, from ``torch.profiler``): the CPU's counterpart of the CUDA allocator's peak, the
  same in every process (the resident-set growth moves by 10-40 MiB with the process's history: the C
  allocator's free lists, what was imported before), though blind to memory PyTorch does not allocate
  (numpy arrays).
* :func:`peak_mib` and :func:`cell`: a row's memory figure (as :func:`memory_fields` recorded it) and a
  figure as a cell of a printed table, ``nan`` where there is none.
* :func:`options_of`: a run's command-line options for its result file.
* :func:`environment`: torch version, device name, CPU model (:func:`cpu_model`), CPU count and the
  1-minute load average (is the machine shared right now?) for the result files.
* :func:`run_script`: every script's entry point: SIGINT / SIGTERM / SIGHUP end it with one line and exit
  status 130 / 143 / 129 instead of a traceback (``examples.voc_joint.signals.run_stoppable``).

This is a module of plain functions rather than ``torch.utils.benchmark.Timer``: the scripts report the median
of a fixed number of single runs (and same-run paired ratios), which ``blocked_autorange`` does not give.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from _atomic import checkout_first
from _counting import allocations

try:
    import resource
except ModuleNotFoundError:  # Windows: no ru_maxrss; PeakMemory reports no CPU figure there
    resource = None  # type: ignore[assignment]

__all__ = [
    "SHAPE_MAX",
    "THREADS_MAX",
    "PeakMemory",
    "cell",
    "check_counts",
    "check_lists",
    "check_output",
    "checkout_type",
    "cli_device",
    "cpu_model",
    "environment",
    "load_average",
    "median",
    "memory_fields",
    "nan_max",
    "options_of",
    "paired_times",
    "peak_mib",
    "prime_autograd",
    "run_script",
    "sync",
    "tensor_peak_mib",
    "time_ms",
    "warmup_runs",
]


#: Largest ``--threads`` a script accepts: torch takes up to 2**31 - 1 threads, then crashes creating them
#: (``torch.set_num_threads(100000)``: a segmentation fault at the first parallel op).
THREADS_MAX = 1024
#: Largest value of a shape option (``--batch-size``, ``--channels``, ``--size``, ...), checked by
#: :func:`check_counts`: beyond it torch's size arithmetic overflows (``--batch-size 2**70``: a ``TypeError``
#: traceback after the run started, or every variant recorded as failed).
SHAPE_MAX = {"batch_size": 2**10, "channels": 2**12, "size": 2**14, "cell_size": 2**14}


def nan_max(values: Sequence[float]) -> float:
    """The largest of ``values``, NaN when any is NaN: Python's ``max`` keeps a number against a NaN that
    comes after it, so a check of the largest difference passed a NaN output or gradient.

    Example:
        >>> nan_max([0.0, float("nan")]), max([0.0, float("nan")])
        (nan, 0.0)
    """
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: Sequence[float]) -> float:
    """The median: the middle value, the mean of the two middle ones for an even count.

    (``median_upper`` took the upper of the two, and ``bench_uniformize.py`` called it the median: the GPU
    check runs it with 10 repeats, so its "medians" up to 2026-12-05 were the 6th of 10 values.)

    Example:
        >>> median([4.0, 1.0, 3.0, 2.0]), median([3.0, 1.0, 2.0])
        (2.5, 2.0)
    """
    return statistics.median(values)


def time_ms(
    fn: Callable[[], object], repeats: int, *, warmup: int = 1, device: torch.device | str = "cpu"
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; per-run milliseconds.

    On CUDA each run is bracketed by two CUDA events recorded on the measured device's current stream, after a
    synchronisation (so the device is idle when a run starts) and read after the end event completed. On the
    CPU each run is bracketed by ``time.perf_counter``.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    out: list[float] = []
    if device.type == "cuda":
        for _ in range(repeats):
            torch.cuda.synchronize(device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            stream = torch.cuda.current_stream(device)  # the measured device's stream, not device 0's
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            out.append(float(start.elapsed_time(end)))
        return out
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def cli_device(parser: argparse.ArgumentParser, device: str) -> torch.device:
    """The device of a script's ``--device``; ``parser.error`` (exit status 2) where it is not ``cpu``,
    ``cuda`` or ``cuda:N``, where it is CUDA and CUDA is not available, or a CUDA index this machine lacks."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index is not None):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available (torch {torch.__version__})")
    # torch keeps a device index in 8 bits and wraps a larger one ("cuda:4096" is cuda:0): read the text's
    index_text = device.partition(":")[2]
    index = int(index_text) if index_text.isdecimal() else (dev.index or 0)
    if dev.type == "cuda" and index >= torch.cuda.device_count():
        from examples.voc_joint.wording import counted

        devices = counted(torch.cuda.device_count(), "CUDA device")
        parser.error(f"--device {device}: this machine has {devices}")
    return dev


def check_counts(
    parser: argparse.ArgumentParser, args: argparse.Namespace, lowest: Mapping[str, int]
) -> None:
    """``parser.error`` (exit status 2) for an option of ``lowest`` (by ``dest``) below its smallest value or
    above its :data:`SHAPE_MAX`, a non-finite or negative float among them, or a ``--threads`` above
    :data:`THREADS_MAX`; options left at ``None`` (a per-mode default) are not checked.

    Example:
        >>> check_counts(argparse.ArgumentParser(), argparse.Namespace(repeats=3, threads=2), {"repeats": 1})
    """
    for name, low in lowest.items():
        value = getattr(args, name)
        if value is not None and (value < low or (isinstance(value, float) and not math.isfinite(value))):
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
        high = SHAPE_MAX.get(name)
        if value is not None and high is not None and value > high:
            parser.error(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {value}")
    threads = getattr(args, "threads", None)
    if threads is not None and not 1 <= threads <= THREADS_MAX:
        parser.error(f"--threads must be in [1, {THREADS_MAX}], got {threads}")


def check_lists(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]) -> None:
    """``parser.error`` (exit status 2) for a comma-separated list option of ``names`` (by ``dest``) given as
    the empty string (an unset shell variable), which would silently mean its default, every name, or naming
    an entry twice (measured twice, one result kept).

    Example:
        >>> check_lists(argparse.ArgumentParser(), argparse.Namespace(ops=None), ["ops"])  # not given
    """
    for name in names:
        value = getattr(args, name)
        if value == "":
            parser.error(f"--{name.replace('_', '-')}: expected a comma-separated list, got ''")
        entries = value.split(",") if value else []
        twice = sorted({e for e in entries if entries.count(e) > 1})
        if twice:
            parser.error(f"--{name.replace('_', '-')} lists {', '.join(twice)} twice, got {value!r}")


def check_output(
    parser: argparse.ArgumentParser,
    option: str,
    path: Path | str | None,
    *,
    default_in: Path | None = None,
) -> None:
    """``parser.error`` (exit status 2) where the result file ``path`` of ``option`` cannot be written: an
    existing folder, below an existing file, or in a folder this user may not write in (the nearest existing
    folder above ``path``, where the file or its missing folders would be made); checked before the
    measurements, not after them. The file is written by renaming a temporary file in its folder, so a
    read-only file in a writable folder is no obstacle.

    Without ``path`` the script writes its default result file into the folder ``default_in`` (``None``: it
    writes nothing, as a ``--quick`` run or a worker process), which is checked as an output folder.

    Example:
        >>> check_output(argparse.ArgumentParser(), "--out", None)  # nothing written without --out
    """
    # the pipeline's rule for an output folder (the scripts import _atomic first, which puts the checkout's
    # examples package on sys.path)
    from examples.voc_joint.cli import output_dir_error

    if path is None:
        error = None if default_in is None else output_dir_error(default_in)
        if error is not None:
            parser.error(f"no {option} given, and the default result folder cannot be used: {error}")
        return
    path = Path(path)
    try:
        is_dir = path.is_dir()
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    except OSError as exc:  # a name too long for the system, ...: not a traceback
        parser.error(f"{option} must be a file path, got {str(path)!r}: {exc.strerror}")
    if is_dir:
        parser.error(f"{option} must be a file path, got the folder {str(path)!r}")
    if blocker is not None:
        parser.error(f"{option} {str(path)!r} lies below the file {str(blocker)!r}")
    error = output_dir_error(path.parent)  # no file in the way: the folder's permission, where it is made
    if error is not None:
        parser.error(f"{option} {str(path)!r}: {error}")


def checkout_type(marker: str | Path) -> Callable[[str], Path]:
    """``type=`` of an A/B script's ``--previous``: a folder of another checkout that holds ``marker`` (a
    path relative to the checkout's root), refusing the empty string (an unset shell variable, which ``Path``
    would take as the current folder), a name the system cannot look up and a folder without ``marker``,
    each as a one-line argparse error. Marked ``checks_path``: documented commands name the reader's paths."""

    def checkout_dir(text: str) -> Path:
        if not text:
            raise argparse.ArgumentTypeError("expected a checkout, got ''")
        path = Path(text).expanduser()
        try:
            found = (path / marker).is_file()
        except OSError as exc:  # a name too long for the system, ...: not a traceback
            raise argparse.ArgumentTypeError(f"expected a checkout, got {text!r}: {exc.strerror}") from None
        if not found:
            raise argparse.ArgumentTypeError(f"not a checkout of this repository (no {marker} in {text!r})")
        return path

    checkout_dir.checks_path = True  # type: ignore[attr-defined]
    return checkout_dir


def warmup_runs(device: torch.device) -> int:
    """Untimed runs before timing: 3 on CUDA (autotuning, allocator growth), 1 on the CPU."""
    return 3 if device.type == "cuda" else 1


def paired_times(
    first: Callable[[], object],
    second: Callable[[], object],
    rounds: int,
    *,
    device: torch.device | str = "cpu",
) -> tuple[list[float], list[float]]:
    """``rounds`` rounds of one timed run of each function (no warm-up), alternating which runs first so that
    neither always finds a warmer machine; per-run milliseconds of ``first`` and of ``second``. Round ``i``'s
    ratio ``first[i] / second[i]`` is robust to the drift of a shared machine (the paired ratio)."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2:
            b.append(time_ms(second, 1, warmup=0, device=device)[0])
            a.append(time_ms(first, 1, warmup=0, device=device)[0])
        else:
            a.append(time_ms(first, 1, warmup=0, device=device)[0])
            b.append(time_ms(second, 1, warmup=0, device=device)[0])
    return a, b


def _proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (Linux), e.g. ``VmRSS`` or ``VmHWM``."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident set size to its current size (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return _proc_status_kib("VmHWM") <= _proc_status_kib("VmRSS") + 1024  # the reset took (1 MiB slack)
    except OSError:
        return False


def _ru_maxrss_kib() -> float:
    """The process's peak resident set size from :mod:`resource`, in KiB: ``ru_maxrss`` is in KiB on Linux
    and the BSDs but in bytes on macOS (read as KiB there, every figure came out 1024x too large)."""
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / 1024 if sys.platform == "darwin" else peak


_PRIMED = {"autograd": False}


def prime_autograd() -> None:
    """Run one tiny CPU backward with an explicit gradient, once per process, before a memory reading: the
    first one imports about 490 modules (sympy and ``torch.fx.experimental.symbolic_shapes``: +33.6 MiB of
    anonymous memory, torch 2.14.1), which every fresh-process row measured as the op's own (an audit,
    2026-12-06: the floor of ``bench_uniformize.py``, ``y`` and ``grad_x``, 168 MiB, read 200-204 MiB)."""
    if _PRIMED["autograd"]:
        return
    v = torch.zeros(1, requires_grad=True)
    (v * 1.0).backward(torch.ones(1))
    _PRIMED["autograd"] = True


class PeakMemory:
    """Extra peak memory from construction to :meth:`extra_mib` (CUDA: allocator; CPU: resident set size),
    after :func:`prime_autograd` (a process's one-time imports are not the region's).

    Attributes:
        method (str): how it is measured: ``"cuda_allocator"``, ``"vmhwm_reset"`` (Linux: peak reset at the
            start), ``"ru_maxrss"`` (growth above the process's earlier peak only: fresh processes) or
            ``"unavailable"`` (neither ``/proc`` nor :mod:`resource`, as on Windows: no figure).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        prime_autograd()
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_allocator"
            self.base = float(torch.cuda.memory_allocated(self.device))
        elif _reset_peak_rss():
            self.method = "vmhwm_reset"
            self.base = float(_proc_status_kib("VmRSS"))
        elif resource is not None:
            self.method = "ru_maxrss"
            self.base = _ru_maxrss_kib()
        else:
            self.method = "unavailable"
            self.base = 0.0

    def extra_mib(self) -> float | None:
        """Peak memory above the starting point, MiB (None where it cannot be measured: ``"unavailable"``)."""
        if self.device.type == "cuda":
            sync(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if self.method == "vmhwm_reset":
            return (_proc_status_kib("VmHWM") - self.base) / 1024
        if resource is None:
            return None
        return (_ru_maxrss_kib() - self.base) / 1024


#: The vector extensions that decide the speed of the CPU kernels, reported when present.
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def tensor_peak_mib(step: Callable[[], object]) -> float:
    """Peak of the tensor bytes live at once during one run of ``step``, above those live when it starts, MiB
    (every allocation and free of PyTorch's CPU allocator, kernels' temporaries included, from
    ``torch.profiler`` with ``profile_memory=True``: ``_counting.allocations``). Run it outside the timed runs
    (the profiler slows the step down); memory that PyTorch does not allocate (numpy arrays) is not in it."""
    return allocations(step).peak_bytes / 2**20


def memory_fields(
    memory: PeakMemory, fresh_process: bool, step: Callable[[], object] | None = None
) -> dict[str, Any]:
    """The result-file fields of a :class:`PeakMemory` reading: the CUDA peak, or the resident-set growth
    (``None`` unless the process was fresh: a reused one has grown before) with the method used, and on the
    CPU, given the measured ``step``, its tensor peak (``peak_tensor_mib``, :func:`tensor_peak_mib`), run
    after the reading (the profiler's own memory would count in the resident set)."""
    if memory.device.type == "cuda":
        return {"peak_cuda_extra_mib": memory.extra_mib()}
    fields: dict[str, Any] = {
        "peak_rss_growth_mib": memory.extra_mib() if fresh_process else None,
        "memory_method": memory.method,
    }
    if step is not None:
        fields["peak_tensor_mib"] = tensor_peak_mib(step)
    return fields


def peak_mib(row: Mapping[str, Any]) -> float | None:
    """The memory figure of a result row holding :func:`memory_fields`: the CUDA peak, else the CPU tensor
    peak (:func:`tensor_peak_mib`; rows written before 2026-12-06 have none), else the resident-set growth;
    ``None`` where it has none (a reused process, a platform without a figure).

    Example:
        >>> peak_mib({"peak_rss_growth_mib": 12.5, "memory_method": "vmhwm_reset"})
        12.5
        >>> peak_mib({"peak_rss_growth_mib": 12.5, "memory_method": "vmhwm_reset", "peak_tensor_mib": 8.0})
        8.0
    """
    if "peak_cuda_extra_mib" in row:
        return row["peak_cuda_extra_mib"]
    return row.get("peak_tensor_mib", row.get("peak_rss_growth_mib"))


def cell(value: float | None, spec: str) -> str:
    """``value`` as a cell of a printed table, formatted by ``spec`` (``">10.1f"``): ``None`` (no figure) as
    ``nan`` in the same width, so that the columns stay aligned.

    Example:
        >>> cell(1.5, ">6.1f"), cell(None, ">6.1f")
        ('   1.5', '   nan')
    """
    return format(float("nan") if value is None else value, spec)


def load_average() -> float | None:
    """The 1-minute load average (is the machine shared right now?); None where the platform has none
    (Windows) or refuses it."""
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return os.getloadavg()[0]
    except OSError:  # not obtainable
        return None


def cpu_model() -> str:
    """The CPU's model name, family and model numbers and vector extensions, e.g.
    ``"AMD EPYC (family 26, model 2; avx2, avx512f, avx512_bf16)"``.

    Cloud VMs of one size land on different CPU generations from day to day, and the figures move with them;
    a result file without the model cannot be compared. A virtual CPU's name can hide the generation: two
    VMs both named ``AMD EPYC`` ran DeepLabV3+'s step (``bench_joint.py``, ResNet-18, 128 px) in 229 and
    120 ms, so the family and model numbers follow the name where the CPU reports them. Linux:
    ``/proc/cpuinfo``; elsewhere ``platform.processor()``.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info = fh.read()
    except OSError:
        return platform.processor() or platform.machine()
    first_cpu = info.split("\n\n")[0].splitlines()
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_cpu)}
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    isa = [f for f in _ISA_FLAGS if f in flags]
    numbers = [
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"))
        if fields.get(key, "").isdigit()
    ]
    details = "; ".join(part for part in (", ".join(numbers), ", ".join(isa)) if part)
    return f"{name} ({details})" if details else name


def options_of(args: argparse.Namespace, leave_out: Sequence[str] = ()) -> dict[str, Any]:
    """A run's options for its result file (``"config"``): ``vars(args)`` with every path as its string (JSON
    has no path type), without the hidden options ``leave_out`` (by ``dest``, e.g. a worker's arguments).

    Example:
        >>> options_of(argparse.Namespace(out=Path("r.json"), rounds=7, worker=None), leave_out=["worker"])
        {'out': 'r.json', 'rounds': 7}
    """
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in leave_out}


def environment(device: torch.device | str, threads: int | None = None) -> dict[str, Any]:
    """Facts about the machine for a result file."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_at_start": load_average(),
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        env["cuda_device"] = props.name
        env["cuda_capability"] = f"{props.major}.{props.minor}"
        env["cuda_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda_runtime"] = torch.version.cuda
    return env


def run_script(main: Callable[[], object], prog: str, note: str = "no result file written") -> int:
    """Run a benchmark's ``main()`` as its command line does: SIGINT (Ctrl-C), SIGTERM and SIGHUP (a closed
    terminal) stop it at once, its ``finally`` blocks run (a measuring child is killed), and the stop is one
    line on stderr, ``<prog>: stopped by SIGTERM (exit status 143); <note>``, instead of Python's traceback
    (SIGINT) or a silent end (SIGTERM, SIGHUP).

    It is ``examples.voc_joint.signals.run_stoppable``, the helper of the example scripts, with the exit
    status of a benchmark's ``main()``: the ``int`` it returns, or 0 for a result (a dict or a list).

    Args:
        main: the script's ``main`` with its arguments bound (it reads ``sys.argv`` when called bare).
        prog: the script's name, the first word of the line.
        note: what a stop leaves, the end of the line (the result files are written once, at the end).

    Returns:
        int: the exit status: ``main()``'s, or ``128 + signal`` (130, 143, 129) when a signal stopped it.

    Example:
        >>> run_script(lambda: {"rows": []}, "bench_demo.py"), run_script(lambda: 1, "bench_demo.py")
        (0, 1)
    """
    checkout_first()  # this checkout's examples package (an ab_uniformize.py worker runs without PYTHONPATH)
    from examples.voc_joint.signals import run_stoppable

    def status() -> int:
        result = main()
        return result if isinstance(result, int) and not isinstance(result, bool) else 0

    return run_stoppable(status, prog, note)
