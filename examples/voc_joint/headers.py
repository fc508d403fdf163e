"""The header pass: every listed image and mask opened before a run starts, every problem named at once.

A bad file that exists (a mask of another size than its image, an RGB or JPEG mask, a 32-bit image, an empty
file or one PIL cannot identify) is otherwise found only when the sampler reaches it, possibly an hour into a
run, and then alone. :func:`check_headers` opens every listed file with PIL, which reads the header only
(size, mode, format; no pixel is decoded), applies the reader's own header rules
(:meth:`~examples.voc_joint.data.VOCSegmentation.header_problems`) and raises one
:class:`~examples.voc_joint.data.DataError` that lists them all. Label values and a file cut after its header
need the pixels: they are still found when the sample is read.

Example:
    >>> from examples.voc_joint.data import VOCSegmentation, ensure_synthetic_voc
    >>> ds = VOCSegmentation(ensure_synthetic_voc(), "val")
    >>> header_problems([ds])
    []
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from examples.voc_joint.data import DataError, VOCSegmentation
from examples.voc_joint.wording import counted

__all__ = [
    "SHOWN_PROBLEMS",
    "check_headers",
    "header_problems",
    "problems_message",
    "shown_problems",
]

#: The most problems a header-pass error lists (then their count).
SHOWN_PROBLEMS = 20


def header_problems(datasets: Sequence[VOCSegmentation], *, progress: bool = False) -> list[str]:
    """The header problems of every sample of ``datasets`` (a sample listed by two of them is read once).

    Args:
        datasets (Sequence[VOCSegmentation]): the splits to check.
        progress (bool): a tqdm bar over the files, shown once the pass has taken 2 s (tqdm is imported only
            then).

    Returns:
        list[str]: every problem in list order, each message naming its file (empty: all headers are fine).
    """
    samples = [(ds, i) for ds in datasets for i in range(len(ds))]
    seen: set[tuple[str, str]] = set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * len(samples), desc="check files", unit="file", delay=2.0, dynamic_ncols=True)
    problems: list[str] = []
    try:
        for ds, i in samples:
            key = (str(ds.image_path(i)), str(ds.mask_path(i)))
            if key not in seen:
                seen.add(key)
                problems += ds.header_problems(i)
            if bar is not None:
                bar.update(2)
    finally:
        if bar is not None:
            bar.close()
    return problems


def shown_problems(
    problems: Sequence[Any],
    *,
    limit: int = SHOWN_PROBLEMS,
    one_line: bool = False,
    describe: Callable[[Any], str] = str,
) -> str:
    """The end of a message that lists ``problems`` (after its colon): the first ``limit``, one a line
    indented by two spaces (``one_line``: separated by ``"; "``), then how many more. ``describe`` makes the
    text of each shown problem, and of those only (a missing file's near miss lists its folder: 30 ms in
    VOC's ``JPEGImages``, 41 s for a list of 1449 names of another data set when every one was described).

    Example:
        >>> print("2 files are bad:" + shown_problems(["a.png", "b.png", "c.png"], limit=2))
        2 files are bad:
          a.png
          b.png
          ... and 1 more
        >>> "2 files are bad:" + shown_problems(["a.png", "b.png"], one_line=True)
        '2 files are bad: a.png; b.png'
        >>> "3 files are bad:" + shown_problems([1, 2, 3], limit=1, one_line=True, describe=lambda n: f"#{n}")
        '3 files are bad: #1; ... and 2 more'
    """
    sep = "; " if one_line else "\n  "
    more = [f"... and {len(problems) - limit} more"] if len(problems) > limit else []
    return (" " if one_line else sep) + sep.join([*map(describe, problems[:limit]), *more])


def problems_message(
    problems: Sequence[str], files: int, *, limit: int = SHOWN_PROBLEMS, one_line: bool = False
) -> str:
    """One message for the problems found in the headers of ``files`` files: the first ``limit``, one a line
    (``one_line``: separated by ``"; "``), then how many more (:func:`shown_problems`).

    Example:
        >>> print(problems_message(["a.png is bad", "b.png is bad", "c.jpg is bad"], 10, limit=2))
        3 problems in the headers of the 10 listed images and masks (--no-check-files skips this check):
          a.png is bad
          b.png is bad
          ... and 1 more
    """
    return (
        f"{counted(len(problems), 'problem')} in the headers of the {files} listed "
        "images and masks (--no-check-files skips this check):"
        + shown_problems(problems, limit=limit, one_line=one_line)
    )


def check_headers(
    datasets: Sequence[VOCSegmentation],
    *,
    progress: bool = False,
    prefix: str | None = "data",
    one_line: bool = False,
) -> float:
    """Run the header pass over ``datasets``: raise every problem at once, else print its duration.

    Args:
        datasets (Sequence[VOCSegmentation]): the splits to check.
        progress (bool): a tqdm bar once the pass has taken 2 s.
        prefix (str | None): the ``[prefix]`` of the line that gives the duration (None: no line).
        one_line (bool): an error of one line (the problems separated by ``"; "``).

    Returns:
        float: the duration of the pass in seconds.

    Raises:
        DataError: the headers of listed files break the reader's rules (:func:`problems_message`).

    Example:
        >>> from examples.voc_joint.data import VOCSegmentation, ensure_synthetic_voc
        >>> seconds = check_headers([VOCSegmentation(ensure_synthetic_voc(), "val")], prefix=None)
    """
    t0 = time.perf_counter()
    problems = header_problems(datasets, progress=progress)
    seconds = time.perf_counter() - t0
    files = 2 * len({(ds.image_path(i), ds.mask_path(i)) for ds in datasets for i in range(len(ds))})
    if problems:
        raise DataError(problems_message(problems, files, one_line=one_line))
    if prefix is not None:
        print(
            f"[{prefix}] read the headers of {files} listed images and masks in {seconds:.1f} s", flush=True
        )
    return seconds
