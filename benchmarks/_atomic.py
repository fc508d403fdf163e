"""Result files of the benchmark scripts: written whole or not at all, in one JSON style, under a new name.

* :func:`write_text_atomic`: the example's :mod:`examples.voc_joint.atomic` (standard library only:
  ``gpu_check.py`` imports no torch), found from the checkout this folder lies in. ``Path.write_text``
  truncated the file, then wrote: a run stopped in between (SIGKILL, a full disk) left an empty or cut file in
  place of the earlier result, and a merged file (``bench_joint.py``'s entries of other machines) lost every
  entry. It writes a temporary file next to the target, renames it onto the target, and removes the
  temporary files that killed runs left.
* :func:`write_json`: every script's JSON result through it, in one style: strict JSON (RFC 8259, which any
  parser reads, ``jq`` and browsers included) with a NaN or an infinity written as ``null`` and named in a
  note on stderr (as the example's ``metrics.json`` and ``ablation.json`` do: a run is not lost for one
  figure that came out NaN, and ``null`` is what the files already hold for "no figure"), indented by 2 and
  ending in a newline (a text file: ``cat``, ``diff`` and ``git`` read it whole); its folder made first. A
  value JSON has no type for is refused before anything is written, with the place where it lies.
* :func:`stamped_result`: the default name of a script whose every run writes a new file,
  ``benchmarks/results/<stem>_<UTC yyyymmdd-HHMM>.json``: a run never overwrites a committed result.
* :func:`result_path`: the rule of the scripts with a ``--quick`` smoke run: ``--out`` when given, else no
  file for a smoke run (it must neither replace nor add a result; a line says so) and the default for a
  full run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)


def checkout_first() -> None:
    """Put this checkout first on ``sys.path``, for its ``examples`` package: before another checkout's on
    ``PYTHONPATH``, and moved there if an editable install of this one put it after that (a script run as
    ``python benchmarks/<script>.py`` from a second checkout or worktree got the other one's)."""
    if sys.path[:1] != [_ROOT]:
        if _ROOT in sys.path:
            sys.path.remove(_ROOT)
        sys.path.insert(0, _ROOT)


checkout_first()

from examples.voc_joint.atomic import remove_dead_writers_files, write_text_atomic  # noqa: E402

__all__ = [
    "RESULTS",
    "checkout_first",
    "remove_dead_writers_files",
    "result_path",
    "stamped_result",
    "write_json",
    "write_text_atomic",
]

#: The folder of the committed results, ``benchmarks/results``.
RESULTS = Path(__file__).resolve().parent / "results"


def stamped_result(stem: str) -> Path:
    """``benchmarks/results/<stem>_<UTC date-time>.json``, e.g. ``soft_20261202-1530.json``: a new file, never
    a committed result.

    Example:
        >>> stamped_result("soft").name.startswith("soft_20")
        True
    """
    return RESULTS / f"{stem}_{time.strftime('%Y%m%d-%H%M', time.gmtime())}.json"


def result_path(out: Path | None, default: Path, quick: bool, *, kind: str = "JSON") -> Path | None:
    """Where a run writes its result: ``out`` (``--out``) when given; else ``None`` for a ``--quick`` smoke
    run, which prints ``--quick: no JSON written (pass --out)`` (``kind`` names the file: ``"CSV"``), and
    ``default`` for a full run.

    Example:
        >>> result_path(None, Path("results/soft.json"), quick=False).name
        'soft.json'
    """
    if out is not None:
        return out
    if quick:  # a smoke run must not replace a committed result, nor add one
        print(f"--quick: no {kind} written (pass --out)")
        return None
    return default


def _strict(value: object, where: str, nulled: list[str]) -> object:
    """``value`` with every non-finite float replaced by ``None`` (its place and value added to ``nulled``);
    a ``TypeError`` naming the place of a value JSON has no type for."""
    if isinstance(value, float):  # bool is an int, numpy's float64 a float
        if math.isfinite(value):
            return value
        nulled.append(f"{value} at {where}")
        return None
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, dict):
        return {k: _strict(v, f"{where}[{k!r}]", nulled) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v, f"{where}[{i}]", nulled) for i, v in enumerate(value)]
    raise TypeError(f"a result must hold JSON values only, got {type(value).__name__} {value!r} at {where}")


def write_json(path: Path | str, data: object) -> list[str]:
    """Write ``data`` to ``path`` as JSON, whole or not at all (:func:`write_text_atomic`), making its folder.

    The one style of the benchmarks' result files: strict JSON indented by 2, ending in a newline; a NaN or
    an infinity is written as ``null`` and named on stderr (``<path>: no JSON for nan at result['rows'][3]
    ...; written as null``). Keys keep their order (the scripts order them for a reader).

    Args:
        path: the result file.
        data: the result: dicts, lists, tuples, strings, numbers, booleans and ``None``.

    Returns:
        list[str]: the non-finite values written as ``null``, each with its place (empty for most results).

    Raises:
        TypeError: a value JSON has no type for (a ``Path``, a tensor, ...), naming its place; nothing is
            written and an earlier file at ``path`` stays as it was.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_json(Path(tmp) / "r.json", {"median_ms": 1.5, "rows": [1, 2]})
        ...     print((Path(tmp) / "r.json").read_text(), end="")
        []
        {
          "median_ms": 1.5,
          "rows": [
            1,
            2
          ]
        }
    """
    path = Path(path)
    nulled: list[str] = []
    text = json.dumps(_strict(data, "result", nulled), indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    if nulled:
        print(f"{path}: no JSON for {', '.join(nulled)}; written as null", file=sys.stderr)
    return nulled
