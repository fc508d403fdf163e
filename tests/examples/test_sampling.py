"""Resumable sample order and per-sample seeded augmentation (the basis of bit-exact resume)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from examples.voc_joint.sampling import EpochSampler, SeededDataset, begin_epoch, derive_seed


def _epoch(n: int, batch: int, world: int, seed: int, epoch: int, start: int = 0) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = EpochSampler(n, batch_size=batch, seed=seed, num_replicas=world, rank=rank)
        s.set_epoch(epoch, start)
        out.append([i for i, _ in s])
    return out


@given(
    n=st.integers(1, 60),
    batch=st.integers(1, 5),
    world=st.integers(1, 4),
    seed=st.integers(0, 2**63 - 1),
    epoch=st.integers(0, 50),
    data=st.data(),
)
def test_shards_partition_full_batches_and_resume_is_a_suffix(n, batch, world, seed, epoch, data) -> None:
    full = _epoch(n, batch, world, seed, epoch)
    steps = n // (batch * world)
    flat = [i for shard in full for i in shard]
    assert all(len(shard) == steps * batch for shard in full)  # drop_last: whole global batches only
    assert len(flat) == len(set(flat)) and set(flat) <= set(range(n))  # no sample twice in an epoch
    done = data.draw(st.integers(0, steps)) * batch * world  # resume after `done` samples (same world)
    resumed = _epoch(n, batch, world, seed, epoch, done)
    assert resumed == [shard[done // world :] for shard in full]
    order = EpochSampler(n, batch_size=batch, seed=seed).order()
    assert sorted(order) == list(range(n)) and order == EpochSampler(n, batch_size=batch, seed=seed).order()


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_derived_seeds_are_63_bit_and_keep_the_parts_apart(parts: list[int]) -> None:
    seed = derive_seed(*parts)
    assert 0 <= seed < 2**63  # fits int64 (and every seeding API)
    assert derive_seed(1, 23) != derive_seed(12, 3) != derive_seed(123)  # the parts are separated, not glued


def test_derived_seeds_and_the_epoch_order_are_fixed_across_versions() -> None:
    """A resumed run re-derives its order and augmentation seeds from ``(seed, epoch, index)``: the derivation
    must not change between versions (a checkpoint written by one resumes bit-exactly under the next). The
    seed is all 63 bits of the BLAKE2b digest (not fewer), and the epoch order is ``randperm`` under
    ``derive_seed(seed, epoch)`` in that argument order."""
    assert derive_seed(0, 1, 2) == 3662037204992188296
    assert derive_seed(7) == 4703935488074688627 and derive_seed(7, 3) == 6579903082405569959
    assert max(derive_seed(i) for i in range(64)) >= 2**62  # the top bit of the 63 is used
    s = EpochSampler(10, batch_size=2, seed=7)
    s.set_epoch(3)
    gen = torch.Generator().manual_seed(derive_seed(7, 3))
    assert s.order() == torch.randperm(10, generator=gen).tolist()
    assert next(iter(s)) == (s.order()[0], derive_seed(7, 3, s.order()[0]))


def test_begin_epoch_reseeds_the_loader_generator_per_epoch() -> None:
    sampler, gen = EpochSampler(10, batch_size=2, seed=0), torch.Generator()
    seeds = []
    for epoch in (3, 4):
        begin_epoch(sampler, gen, 7, epoch, start=4)
        assert (sampler.epoch, sampler.start) == (epoch, 4) and gen.initial_seed() == derive_seed(7, epoch)
        seeds.append(gen.initial_seed())
    assert seeds[0] != seeds[1]  # the workers' base seeds differ between epochs


def test_sample_seeds_depend_on_seed_epoch_and_index() -> None:
    s = EpochSampler(12, batch_size=3, seed=5)
    per_epoch = []
    for epoch in (1, 2):
        s.set_epoch(epoch)
        keys = dict(s)
        assert keys == {i: derive_seed(5, epoch, i) for i in keys}
        per_epoch.append(keys)
    assert all(per_epoch[0][i] != per_epoch[1][i] for i in range(12))  # fresh augmentation every epoch


def test_order_depends_on_seed_and_epoch_only() -> None:
    a = EpochSampler(50, batch_size=2, seed=3)
    b = EpochSampler(50, batch_size=5, seed=3, num_replicas=2, rank=1)
    a.set_epoch(4)
    b.set_epoch(4, start=10)
    assert a.order() == b.order()
    b.set_epoch(5)
    assert a.order() != b.order()
    assert EpochSampler(50, batch_size=2, seed=4).order() != EpochSampler(50, batch_size=2, seed=3).order()


def test_world_size_change_keeps_the_remaining_samples() -> None:
    """Resuming an epoch with a different world size continues the same global order (no sample repeated)."""
    before = _epoch(24, 2, 2, seed=0, epoch=1)
    done = 8  # 2 steps of 2 processes x 2
    after = _epoch(24, 2, 3, seed=0, epoch=1, start=done)
    seen = {i for shard in before for i in shard[: done // 2]}
    rest = [i for shard in after for i in shard]
    assert not seen & set(rest) and len(rest) == 12  # (24 - 8) // 6 = 2 steps of 3 x 2


@given(
    n=st.integers(1, 40),
    batch=st.integers(1, 5),
    world=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_resume_at_any_position_stays_inside_the_epochs_full_batches(n, batch, world, seed, data) -> None:
    """After a batch-size or world-size change a resume position need not be a multiple of the new global
    batch: the rest of the epoch is then the whole global batches that still fit before the drop_last
    boundary, and never reads a sample that a full epoch drops (e.g. n=10, global batch 3, start 1: 2 steps,
    not 3 that would read the 10th sample)."""
    global_batch = batch * world
    usable = n // global_batch * global_batch
    start = data.draw(st.integers(0, n))
    kept = EpochSampler(n, batch_size=batch, seed=seed).order()[:usable]
    rest = _epoch(n, batch, world, seed, epoch=0, start=start)
    steps = max(0, usable - start) // global_batch
    assert all(len(shard) == steps * batch for shard in rest)
    flat = [i for shard in rest for i in shard]
    assert sorted(flat) == sorted(kept[start : start + steps * global_batch])


class _Noise(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3)


def test_seeded_dataset_is_pure_and_restores_the_rng() -> None:
    ds = SeededDataset(_Noise())
    state = torch.get_rng_state()
    a = ds[(2, derive_seed(0, 1, 2))]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, ds[(2, derive_seed(0, 1, 2))]) and not torch.equal(a, ds[(2, derive_seed(0, 2, 2))])


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_do_not_depend_on_workers(workers: int) -> None:
    sampler = EpochSampler(8, batch_size=2, seed=5)
    sampler.set_epoch(2)
    ref = list(DataLoader(SeededDataset(_Noise()), batch_size=2, sampler=sampler))
    got = list(DataLoader(SeededDataset(_Noise()), batch_size=2, sampler=sampler, num_workers=workers))
    assert all(torch.equal(x, y) for x, y in zip(ref, got, strict=True))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="EpochSampler needs"):
        EpochSampler(0, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="rank 2"):
        EpochSampler(4, batch_size=2, seed=0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="EpochSampler needs"):  # not a ZeroDivisionError on first use
        EpochSampler(4, batch_size=0, seed=0)


def test_a_negative_start_counts_as_the_epochs_beginning() -> None:
    """``set_epoch(e, start)`` clamps a negative ``start`` to 0: the whole epoch, not a longer one that reads
    the shuffled order from its end (``order[-2]``) and yields more samples than a full epoch."""
    s = EpochSampler(10, batch_size=2, seed=3)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start=-2)
    assert s.start == 0 and len(s) == len(full) == 10 and list(s) == full


def test_a_start_past_the_epochs_full_batches_leaves_nothing() -> None:
    """After a batch-size change the samples already done can lie past the new ``drop_last`` boundary (10
    samples, 9 usable in global batches of 3, 10 done): the rest of the epoch is empty, ``len`` 0, not a
    negative length that ``len()`` refuses."""
    s = EpochSampler(10, batch_size=3, seed=0)
    s.set_epoch(0, start=10)
    assert len(s) == 0 and list(s) == []
    s = EpochSampler(10, batch_size=1, seed=0, num_replicas=3, rank=2)
    s.set_epoch(0, start=10)
    assert len(s) == 0 and list(s) == []


def test_seeded_dataset_seeds_the_cpu_generator_only(monkeypatch) -> None:
    """Reading a sample seeds torch's CPU generator alone, never an accelerator's: ``torch.manual_seed`` also
    reseeds (or queues a lazy reseed of) every CUDA / MPS / XPU generator, which ``SeededDataset`` does not
    restore, so with ``--workers 0`` the training process's GPU dropout would depend on the last sample read
    (and every read would queue slow lazy seeding)."""
    calls = []

    def record(name):
        return lambda *a, **k: calls.append(name)

    monkeypatch.setattr(torch.cuda, "manual_seed_all", record("cuda.manual_seed_all"))
    monkeypatch.setattr(torch.cuda, "manual_seed", record("cuda.manual_seed"))
    if hasattr(torch, "mps"):
        monkeypatch.setattr(torch.mps, "manual_seed", record("mps.manual_seed"))
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "manual_seed_all", record("xpu.manual_seed_all"))
    ds = SeededDataset(_Noise())
    a = ds[(2, derive_seed(0, 1, 2))]
    assert calls == []
    assert torch.equal(a, ds[(2, derive_seed(0, 1, 2))])  # still seeded: the same key, the same sample
