"""Resumable training order: an epoch's samples and their augmentation depend only on (seed, epoch, index).

:class:`EpochSampler` yields ``(index, sample_seed)`` keys: a shuffled order of the data set that is a
function of ``(seed, epoch)`` alone, sharded over the processes like ``DistributedSampler`` (rank ``r`` of
``W`` takes positions ``r, r + W, ...``), starting at any position of the epoch. :class:`SeededDataset` reads
such a key and runs the wrapped data set's random transform with torch's CPU generator seeded by
``sample_seed``, its state saved and restored around it. So:

* a resumed run skips the samples already done without loading or transforming them, and the remaining ones
  get exactly the crops and flips of an uninterrupted run;
* the batches are the same with any number of ``DataLoader`` workers;
* the training process's own RNG (dropout) never sees the data pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededDataset", "begin_epoch", "derive_seed"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``parts`` (BLAKE2b of their decimal text).

    Example:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
        True
    """
    text = "/".join(str(int(p)) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled, sharded, resumable order of the samples of one epoch (full global batches only).

    Args:
        num_samples: size of the data set.
        batch_size: samples per process and step.
        seed: run seed.
        num_replicas: processes (world size).
        rank: this process.

    An epoch holds ``steps_per_epoch = num_samples // (batch_size * num_replicas)`` steps; the remaining
    samples of the shuffled order are dropped (``drop_last``). :meth:`set_epoch` chooses the epoch and the
    number of samples (over all processes) already done in it. After a change of batch size or world size
    that number need not be a multiple of the new global batch: the epoch then continues with the whole
    global batches that still fit before the ``drop_last`` boundary, and never reads a dropped sample.

    Example:
        >>> s = EpochSampler(10, batch_size=2, seed=0)
        >>> s.set_epoch(3)
        >>> full = list(s)
        >>> s.set_epoch(3, start=4)
        >>> list(s) == full[4:], s.steps_per_epoch, len(s)
        (True, 5, 6)
    """

    def __init__(self, num_samples: int, *, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0):
        if num_samples < 1 or batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                "EpochSampler needs num_samples, batch_size, num_replicas >= 1 and 0 <= rank < num_replicas, "
                f"got {num_samples}, {batch_size}, {num_replicas}, rank {rank}"
            )
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch, self.start = 0, 0

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all processes."""
        return self.batch_size * self.num_replicas

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in a full epoch."""
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from position ``start`` (samples done by all processes together)."""
        self.epoch, self.start = int(epoch), max(0, int(start))

    def order(self) -> list[int]:
        """The shuffled data-set indices of the current epoch (all processes, full order)."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=gen).tolist()

    def _per_rank(self) -> int:
        usable = self.steps_per_epoch * self.global_batch
        return max(0, (usable - self.start) // self.global_batch) * self.batch_size

    def __len__(self) -> int:
        return self._per_rank()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order()
        for j in range(self._per_rank()):
            index = order[self.start + j * self.num_replicas + self.rank]
            yield index, derive_seed(self.seed, self.epoch, index)


class SeededDataset(Dataset[Any]):
    """Index a data set with ``(index, seed)`` keys: its random transform runs under ``manual_seed(seed)``.

    The global torch RNG state is restored afterwards, so reading a sample never changes it.

    Example:
        >>> class Noise(torch.utils.data.Dataset):
        ...     def __getitem__(self, i):
        ...         return torch.rand(())
        >>> ds = SeededDataset(Noise())
        >>> bool(ds[(0, 7)] == ds[(5, 7)]), bool(ds[(0, 7)] == ds[(0, 8)])
        (True, False)
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style data sets define __len__

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        state = torch.get_rng_state()
        try:
            # the CPU generator only: torch.manual_seed would also queue (slow) lazy seeding of every
            # accelerator backend, and the transforms draw from the CPU generator alone
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


def begin_epoch(
    sampler: EpochSampler, generator: torch.Generator, seed: int, epoch: int, start: int = 0
) -> None:
    """Set up epoch ``epoch`` of a training loader: its sampler at position ``start`` (samples done by all
    processes) and the loader's ``generator``, which draws the workers' base seeds, reseeded from ``(seed,
    epoch)``. One rule for every training loop, so that a resumed epoch draws what the uninterrupted one drew.

    Example:
        >>> s, g = EpochSampler(10, batch_size=2, seed=0), torch.Generator()
        >>> begin_epoch(s, g, 0, 3, start=4)
        >>> (s.epoch, s.start), g.initial_seed() == derive_seed(0, 3)
        ((3, 4), True)
    """
    sampler.set_epoch(epoch, start)
    generator.manual_seed(derive_seed(seed, epoch))
