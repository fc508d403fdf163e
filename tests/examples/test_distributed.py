"""distributed.py and train.py's rank-0 protocol (``_agree``, ``data_root``) without a second process.

The collectives of a 2-process group are replaced by fakes that play the other process, so every rank's code
path runs here in milliseconds; the real gloo group is exercised by the torchrun test in test_faults.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("torchvision")

from examples.voc_joint import distributed, engine, train, train_data, train_options
from examples.voc_joint.checkpoint import CheckpointError
from examples.voc_joint.cli import UsageError
from examples.voc_joint.distributed import DistInfo


class _OtherProcess:
    """Fake collectives of a 2-process group: the other process contributes ``value`` / ``flags`` and rank 0
    broadcasts ``sent`` (what rank 0 broadcasts when this process is rank 0 is recorded in ``broadcasts``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, value=0.0, flags=None, sent=None) -> None:
        self.value, self.flags, self.sent = value, flags, sent
        self.broadcasts: list[tuple[object, int]] = []
        self.calls: list[str] = []
        monkeypatch.setattr(distributed.dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(distributed.dist, "broadcast_object_list", self.broadcast_object_list)
        monkeypatch.setattr(distributed.dist, "barrier", lambda: self.calls.append("barrier"))

    def all_reduce(self, t: torch.Tensor, op=distributed.dist.ReduceOp.SUM) -> None:
        if op == distributed.dist.ReduceOp.MAX:
            # a training step's flags (loss, gradients, weights, running statistics, signal), the
            # element-by-element recheck of its gradients, weights and running statistics where their norms
            # were flagged (3), or the check of the state an epoch ends with and its recheck (weights, running
            # statistics: 2): the other process's NaNs are real
            n = t.numel()
            flags = self.flags if n == self.flags.numel() else self.flags[1:4] if n == 3 else self.flags[2:4]
            torch.maximum(t, flags.to(t.dtype), out=t)
        else:
            assert op == distributed.dist.ReduceOp.SUM, op
            t.add_(torch.tensor([self.value], dtype=t.dtype))

    def broadcast_object_list(self, box: list, src: int) -> None:
        assert src == 0, "the value of rank 0 is broadcast"
        self.broadcasts.append((box[0], src))
        if self.sent is not None:
            box[0] = self.sent


def _rank_1_of_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's whole environment of rank 1 of 2 processes on one machine (a machine's own ``MASTER_PORT``,
    checked with several processes, stays out)."""
    env = {
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_main_process_is_global_rank_0_not_each_machines_local_rank_0() -> None:
    """Only global rank 0 writes checkpoints and logs: on a second machine local rank 0 is not the main."""
    assert DistInfo().main and not DistInfo().enabled
    assert DistInfo(rank=0, world_size=4, local_rank=0).main
    assert not DistInfo(rank=2, world_size=4, local_rank=0).main
    assert DistInfo(rank=0, world_size=2).enabled


def test_collectives_combine_both_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """mean: float64 sum / world size (a float32 sum would round 1e8 + 1); any: element-wise maximum of 0/1
    flags; from_main: rank 0's object on every rank."""
    other = _OtherProcess(monkeypatch, value=1e8 + 3, flags=torch.tensor([1.0, 1.0, 0.0]), sent="rank 0's")
    info = DistInfo(rank=1, world_size=2, local_rank=1)
    assert info.mean(1e8 + 1) == 1e8 + 2
    assert info.mean(1.0) == pytest.approx((1.0 + 1e8 + 3) / 2)
    flags = torch.tensor([0.0, 1.0, 0.0])
    assert info.any(flags) is flags and flags.tolist() == [1.0, 1.0, 0.0]
    assert info.from_main("mine") == "rank 0's"
    info.barrier()
    assert other.calls == ["barrier"]


def test_one_process_never_calls_a_collective(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("no collective without a process group")

    for name in ("all_reduce", "broadcast_object_list", "barrier"):
        monkeypatch.setattr(distributed.dist, name, refuse)
    info = DistInfo()
    flags = torch.tensor([0.0, 1.0])
    assert info.mean(2.5) == 2.5 and info.any(flags).tolist() == [0.0, 1.0] and info.from_main(3) == 3
    info.barrier()
    info.wait_for_main()  # train.py --eval in one process: no group to wait in


def test_gather_in_one_process_is_a_list_of_one() -> None:
    assert DistInfo().gather({"rng": 1}) == [{"rng": 1}]


def test_mean_divides_the_sum_by_the_number_of_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four processes: the three others contribute 9 in all, this one 3: the mean is 12 / 4, not / 2."""
    _OtherProcess(monkeypatch, value=9.0)
    assert DistInfo(rank=2, world_size=4).mean(3.0) == 3.0


def test_gather_gives_one_entry_per_process_in_rank_order(monkeypatch: pytest.MonkeyPatch) -> None:
    def all_gather_object(out: list, obj: object) -> None:  # fills the list it is given, as torch does
        out[:] = [obj if rank == 1 else f"rank {rank}" for rank in range(len(out))]

    monkeypatch.setattr(distributed.dist, "all_gather_object", all_gather_object)
    assert DistInfo(rank=1, world_size=3).gather("mine") == ["rank 0", "mine", "rank 2"]


def test_wait_for_main_waits_in_the_long_timeout_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0's evaluation is waited for in :attr:`DistInfo.wait_group` (timeout MAIN_WORK_TIMEOUT), not in
    the default group, whose timeout a long evaluation outlasts; without such a group, in the default one."""
    groups: list[object] = []
    monkeypatch.setattr(distributed.dist, "barrier", lambda group=None: groups.append(group))
    DistInfo(rank=1, world_size=2, wait_group="gloo group").wait_for_main()
    DistInfo(rank=1, world_size=2).wait_for_main()
    assert groups == ["gloo group", None]


def test_peer_lost_is_a_runtime_error_with_one_of_the_gloo_messages() -> None:
    """Each of gloo's three words for a process gone is a lost peer; the same words in an error that is not
    a collective's (an ``OSError`` of a pipe) or another RuntimeError are not."""
    for message in distributed.PEER_LOST_MESSAGES:
        assert distributed.peer_lost(RuntimeError(f"[../gloo/transport/tcp/pair.cc:589] {message}"))
    assert distributed.peer_lost(RuntimeError("[pair.cc:598] Broken pipe"))
    assert not distributed.peer_lost(OSError("[Errno 32] Broken pipe"))
    assert not distributed.peer_lost(BrokenPipeError(32, "Broken pipe"))
    assert not distributed.peer_lost(RuntimeError("Connection refused"))


def test_init_distributed_joins_an_nccl_group_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    inits: list[dict] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    set_devices: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", set_devices.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(inits))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: inits.append(kw))
    groups: list[dict] = []
    monkeypatch.setattr(distributed.dist, "new_group", lambda **kw: groups.append(kw) or "gloo group")
    _rank_1_of_2(monkeypatch)
    info = distributed.init_distributed("cuda")
    assert info.device == torch.device("cuda", 1)
    assert set_devices == [torch.device("cuda", 1)]  # NCCL uses the current device: that of its rank
    assert inits == [{"backend": "nccl", "init_method": "env://"}]
    # waiting for rank 0's evaluation: a gloo group whose timeout is not NCCL's 10 minutes
    assert groups == [{"backend": "gloo", "timeout": distributed.MAIN_WORK_TIMEOUT}]
    assert info.wait_group == "gloo group"
    # longer than the process group's own timeout (30 minutes by default), which a long evaluation outlasted
    assert distributed.dist.constants.default_pg_timeout < distributed.MAIN_WORK_TIMEOUT


def test_a_process_of_a_second_machine_takes_the_gpu_of_its_local_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 3 of 4, the second process of the second machine: its GPU is ``cuda:1`` (LOCAL_RANK), not the
    global rank's ``cuda:3``, which that machine does not have."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "new_group", lambda **kw: None)
    for name, value in (("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    assert distributed.init_distributed("cuda").device == torch.device("cuda", 1)


def test_init_distributed_reads_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK, WORLD_SIZE and LOCAL_RANK each go to their own field; CPU processes join a gloo group once."""
    inits: list[dict] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(inits))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: inits.append(kw))
    monkeypatch.setattr(distributed.dist, "new_group", lambda **kw: None)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.init_distributed("cpu")
    assert info == DistInfo(rank=3, world_size=4, local_rank=1, device=torch.device("cpu"))
    assert inits == [{"backend": "gloo", "init_method": "env://"}]
    distributed.init_distributed("cpu")  # already initialized: not a second time
    assert len(inits) == 1
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert distributed.init_distributed("cpu") == DistInfo() and len(inits) == 1


def test_one_process_joins_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without WORLD_SIZE (or with 1) nothing is initialized: no env:// rendezvous (whose variables are not
    set) and no wait group."""
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)

    def joined(**kwargs: object) -> None:
        raise AssertionError("one process joins no group")

    monkeypatch.setattr(distributed.dist, "init_process_group", joined)
    monkeypatch.setattr(distributed.dist, "new_group", joined)
    info = distributed.init_distributed("cpu")
    assert info == DistInfo() and info.wait_group is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_distributed("cpu").wait_group is None


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({"WORLD_SIZE": ""}, "WORLD_SIZE", "a whole number >= 1"),
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE", "a whole number >= 1"),
        ({"WORLD_SIZE": "-1"}, "WORLD_SIZE", "a whole number >= 1"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE", "a whole number >= 1"),
        ({"WORLD_SIZE": "2.0"}, "WORLD_SIZE", "a whole number >= 1"),
        ({"WORLD_SIZE": "\u0663"}, "WORLD_SIZE", "a whole number >= 1"),  # int() reads it as 3
        ({"WORLD_SIZE": " 0 "}, "WORLD_SIZE", "a whole number >= 1"),  # the value as set
        ({"WORLD_SIZE": "2", "RANK": ""}, "RANK", "a whole number >= 0"),
        ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK", "a whole number >= 0"),
        ({"WORLD_SIZE": "2", "RANK": "one"}, "RANK", "a whole number >= 0"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK", "a rank below WORLD_SIZE=2 (0 to 1)"),
        ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK", "a rank below WORLD_SIZE=2 (0 to 1)"),
        ({"RANK": "1"}, "RANK", "a rank below WORLD_SIZE unset (one process) (0 to 0)"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "-3"}, "LOCAL_RANK", "a whole number >= 0"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "x"}, "LOCAL_RANK", "a whole number >= 0"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "2"}, "LOCAL_RANK", "a rank below WORLD_SIZE=2"),
        ({"WORLD_SIZE": "2", "MASTER_PORT": ""}, "MASTER_PORT", "a TCP port, 1 to 65535"),
        ({"WORLD_SIZE": "2", "MASTER_PORT": "abc"}, "MASTER_PORT", "a TCP port, 1 to 65535"),
        ({"WORLD_SIZE": "2", "MASTER_PORT": "-5"}, "MASTER_PORT", "a TCP port, 1 to 65535"),
        ({"WORLD_SIZE": "2", "MASTER_PORT": "0"}, "MASTER_PORT", "a TCP port, 1 to 65535"),
        ({"WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "MASTER_PORT", "a TCP port, 1 to 65535"),
    ],
)
def test_a_hostile_torchrun_environment_is_refused_naming_the_variable(
    env: dict[str, str], name: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WORLD_SIZE=''`` or ``RANK=abc`` failed in ``int()`` ("invalid literal for int() with base 10: ''",
    naming no variable); ``WORLD_SIZE=0`` or ``-1`` ran as one process; ``RANK=1`` without ``WORLD_SIZE`` ran
    one process that was not the main one and wrote no checkpoint; ``RANK=5`` of 2 waited forever in
    ``init_process_group`` for a rank 0; ``MASTER_PORT=abc`` was torch's bare ``int()`` error. Each is a usage
    error naming the variable, what it must be and its value, before any process group is joined."""
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)

    def joined(**kwargs: object) -> None:
        raise AssertionError("no process group is joined with that environment")

    monkeypatch.setattr(distributed.dist, "init_process_group", joined)
    monkeypatch.setattr(distributed.dist, "new_group", joined)
    wanted = f"environment variable {name}={env[name]!r}: expected {expected}"
    with pytest.raises(UsageError) as err:
        distributed.init_distributed("cpu")
    assert str(err.value).startswith(wanted) and str(err.value).endswith(f"got {env[name]!r}"), err.value


def test_a_well_formed_torchrun_environment_is_read_as_given() -> None:
    """torchrun's values, with the blanks a shell may add; MASTER_PORT is torch's to read in one process."""
    assert distributed.torchrun_environment({}) == (1, 0, 0)
    env = {"WORLD_SIZE": " 2 ", "RANK": "1", "LOCAL_RANK": "0"}
    assert distributed.torchrun_environment(env) == (2, 1, 0)
    assert distributed.torchrun_environment({"WORLD_SIZE": "1", "MASTER_PORT": "abc"}) == (1, 0, 0)
    assert distributed.torchrun_environment({"WORLD_SIZE": "2", "MASTER_PORT": "65535"}) == (2, 0, 0)


@pytest.mark.parametrize("missing", ["RANK", "MASTER_ADDR", "MASTER_PORT"])
def test_a_rendezvous_variable_missing_is_a_usage_error_naming_it(
    missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WORLD_SIZE=2`` without ``RANK``, ``MASTER_ADDR`` or ``MASTER_PORT`` (a launch by hand, not by
    torchrun) ended train.py in a traceback of torch's rendezvous ``ValueError``; it is a usage error now,
    with torch's message naming the variable (the real env:// rendezvous runs: it fails before connecting)."""
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv(missing)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    with pytest.raises(UsageError, match=rf"environment variable {missing} expected, but not set") as err:
        distributed.init_distributed("cpu")
    assert "WORLD_SIZE=2: launch the processes with torchrun" in str(err.value), err.value


def test_train_refuses_a_hostile_torchrun_environment_with_a_usage_error(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``WORLD_SIZE=abc train.py ...`` ended in a traceback of ``int()``; now exit status 2 and one line
    naming WORLD_SIZE, before any output folder is made."""
    from .helpers import train_args

    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(SystemExit) as stop:
        train.main(train_args(tiny_voc, tmp_path / "run", "--stage", "seg", "--max-steps", "1"))
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "error: environment variable WORLD_SIZE='abc': expected a whole number >= 1" in err, err
    assert not (tmp_path / "run").exists()


def test_ddp_processes_take_the_gpu_of_their_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun a process takes cuda:<LOCAL_RANK>. An index in ``--device`` was ignored without a word
    (rank 0 of ``--device cuda:1`` trained on cuda:0): every process refuses it now. A LOCAL_RANK without a
    GPU is named as such (it said "'cuda:2' requested", which the user had not asked for)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.resolve_device("cuda", local_rank=1, distributed=True) == torch.device("cuda", 1)
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert distributed.resolve_device("cuda", local_rank=1) == torch.device("cuda", 0)  # one process
    for rank in (0, 1):
        for index in (0, 1):
            with pytest.raises(
                ValueError, match=rf"device 'cuda:{index}' under torchrun: each process takes "
            ):
                distributed.resolve_device(f"cuda:{index}", local_rank=rank, distributed=True)
    with pytest.raises(
        ValueError,
        match=r"^LOCAL_RANK=2 takes cuda:2 but this machine has 2 CUDA devices: start at most 2 processes "
        r"per machine \(torchrun --nproc-per-node\)$",
    ):
        distributed.resolve_device("cuda", local_rank=2, distributed=True)


def test_init_distributed_refuses_a_device_as_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device refused under torchrun is a usage error (exit status 2, one line), not a traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _rank_1_of_2(monkeypatch)
    with pytest.raises(UsageError, match=r"^LOCAL_RANK=1 takes cuda:1 but this machine has 1 CUDA device: "):
        distributed.init_distributed("cuda")
    with pytest.raises(UsageError, match=r"^device 'cuda:0' under torchrun: "):
        distributed.init_distributed("cuda:0")
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("index", [2, 255, 256, 4096, 70000])
def test_a_device_index_torch_would_wrap_is_refused(monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    """torch keeps a device index in 8 bits: ``torch.device("cuda:4096")`` is ``cuda:0``, ``cuda:70000`` is
    ``cuda:112``. The index of the text is the one checked, on a GPU machine and on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    wanted = rf"'cuda:{index}' requested but this machine has 2 CUDA devices"
    with pytest.raises(ValueError, match=wanted):
        distributed.resolve_device(f"cuda:{index}")
    with pytest.raises(ValueError, match=rf"device 'cpu:{index}': the CPU is one device, without an index"):
        distributed.resolve_device(f"cpu:{index}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=rf"'cuda:{index}' requested but CUDA is not available"):
        distributed.resolve_device(f"cuda:{index}")


def test_unwrap_model_returns_the_module_inside_a_wrapper() -> None:
    """Checkpoints hold the inner model's keys (no ``module.`` prefix) whatever wraps it."""
    net = nn.Linear(2, 2)
    assert distributed.unwrap_model(nn.DataParallel(net)) is net
    holder = nn.Module()
    holder.module = "not a module"  # an attribute of that name that is no module: no wrapper
    assert distributed.unwrap_model(holder) is holder


# ---------------------------------------------------------------------------------- train.py's rank protocol
def test_agree_runs_the_work_on_rank_0_and_gives_every_rank_its_result_or_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 0 runs ``work`` and broadcasts its result or its error (also when it fails, so that the others do
    not wait forever); the other ranks never run it and raise rank 0's error with its type."""
    ran: list[int] = []

    def work() -> int:
        ran.append(1)
        return 42

    def fails() -> int:
        raise CheckpointError("corrupt checkpoint")

    # one process: the error keeps its type (CheckpointError and UsageError read differently)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train._agree(DistInfo(), fails)
    assert train._agree(DistInfo(), work) == 42

    main = _OtherProcess(monkeypatch)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train._agree(DistInfo(rank=0, world_size=2), fails)
    assert main.broadcasts == [((None, ("CheckpointError", "corrupt checkpoint")), 0)]

    ran.clear()
    _OtherProcess(monkeypatch, sent=(7, None))
    assert train._agree(DistInfo(rank=1, world_size=2, local_rank=1), work) == 7 and ran == []
    _OtherProcess(monkeypatch, sent=(None, ("UsageError", "folder in use")))
    with pytest.raises(UsageError, match="folder in use"):
        train._agree(DistInfo(rank=1, world_size=2, local_rank=1), work)
    assert ran == []


def test_agree_passes_rank_0s_os_error_to_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``OSError`` of rank 0's work (the folder lock on a file system without locks: ENOLCK; a folder
    that ``--overwrite`` cannot clear) left rank 0 before the broadcast: the other ranks failed in the
    collective, reported as a lost process ("killed or crashed"). It is broadcast now: rank 0 raises its own
    error, the others the same built-in class with its errno and message, marked as printed by rank 0."""
    import errno

    lost = PermissionError(errno.EACCES, "cannot remove /out/seg: Permission denied")

    def fails() -> None:
        raise lost

    main = _OtherProcess(monkeypatch)
    with pytest.raises(PermissionError) as own:
        train._agree(DistInfo(rank=0, world_size=2), fails)
    assert own.value is lost and not getattr(own.value, distributed.PRINTED_BY_RANK_0, False)
    sent = main.broadcasts[0][0]
    assert sent == (None, ("PermissionError", str(lost), errno.EACCES)), sent
    for name, cls in [("PermissionError", PermissionError), ("OSError", OSError), ("Error", OSError)]:
        _OtherProcess(monkeypatch, sent=(None, (name, "cannot lock the output folder /out", errno.ENOLCK)))
        with pytest.raises(OSError) as copy:
            train._agree(DistInfo(rank=1, world_size=2, local_rank=1), fails)
        assert type(copy.value) is cls and copy.value.errno == errno.ENOLCK
        assert str(copy.value) == "cannot lock the output folder /out"
        assert getattr(copy.value, distributed.PRINTED_BY_RANK_0)


@pytest.mark.parametrize("rank", [0, 1])
def test_an_os_error_of_rank_0s_work_is_printed_by_rank_0_only(
    rank: int,
    tiny_voc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rank 0's lock that fails with an OSError (ENOLCK): exit status 1 on every rank, the error printed once
    (by rank 0), and no "another process was lost" on the others."""
    import errno

    from .helpers import train_args

    def no_locks(locks) -> None:
        raise OSError(errno.ENOLCK, "cannot lock the output folder: No locks available (ENOLCK)")

    monkeypatch.setattr(train, "_acquire", no_locks)  # runs on rank 0 only
    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=rank, world_size=2))
    sent = (None, ("OSError", "cannot lock the output folder: No locks available (ENOLCK)", errno.ENOLCK))
    _OtherProcess(monkeypatch, sent=sent if rank else None)
    monkeypatch.setattr(sys, "argv", ["train.py", *train_args(tiny_voc, tmp_path / "run", "--stage", "seg")])
    assert train._cli() == 1
    err = capsys.readouterr().err
    assert ("No locks available" in err) == (rank == 0) and "lost" not in err, err


@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_rank_0_decided_is_printed_by_rank_0_only(
    rank: int,
    tiny_voc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refusal that rank 0 decides (``_agree``) reaches every process, and every process printed it: as many
    copies as processes under torchrun. Rank 0 prints it; the others exit with the same status, silently."""
    from .helpers import train_args

    def refuse(stages, args) -> None:
        raise UsageError("the checkpoint's options differ")

    monkeypatch.setattr(train, "_resolve_stages", refuse)  # runs on rank 0 only
    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=rank, world_size=2))
    refusal = (None, ("UsageError", "the checkpoint's options differ"))
    _OtherProcess(monkeypatch, sent=refusal if rank else None)  # rank 0's refusal, broadcast to rank 1
    with pytest.raises(SystemExit) as stop:
        train.main(train_args(tiny_voc, tmp_path / "run", "--stage", "seg"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert ("the checkpoint's options differ" in err) == (rank == 0), err


@pytest.mark.parametrize("rank", [0, 1])
def test_a_header_problem_rank_0_found_is_printed_by_rank_0_only(
    rank: int,
    tiny_voc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The header pass runs on rank 0; its error reached every process, and every process printed it: one
    copy now, by rank 0; exit status 1 on every rank."""
    import shutil

    from .helpers import train_args

    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    mask = next((root / "SegmentationClass").glob("*.png"))
    mask.write_bytes(b"not a png")
    header_error: list[str] = []

    def broadcast(box: list, src: int) -> None:
        if rank == 0:
            if box[0] is not None and isinstance(box[0], str):
                header_error.append(box[0])
        elif box[0] is None:  # rank 1's placeholder of the header pass's error: rank 0's text
            box[0] = f"1 problem in the headers: {mask}: not a PNG"

    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=rank, world_size=2))
    _OtherProcess(monkeypatch)
    monkeypatch.setattr(distributed.dist, "broadcast_object_list", broadcast)
    argv = ["train.py", *train_args(root, tmp_path / "run", "--stage", "seg", "--max-steps", "1")]
    monkeypatch.setattr(sys, "argv", argv)
    assert train._cli() == 1
    err = capsys.readouterr().err
    assert (mask.name in err) == (rank == 0), err
    assert (len(header_error) == 1) == (rank == 0), header_error


def test_a_non_finite_step_every_process_agreed_on_is_printed_by_rank_0_only(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every process stops at a NaN with the same message (they agree on it in the step's flags), and every
    process printed it; rank 0 alone prints it now, every process exits with status 1. (Rank 0 runs first;
    rank 1 then gets what rank 0 broadcast, in the same order.)"""
    from .helpers import train_args

    monkeypatch.setenv("TRANSINIT_FAULT", "nan-loss@step:1")
    monkeypatch.setattr(train.nn.parallel, "DistributedDataParallel", lambda model, **kwargs: model)
    _OtherProcess(monkeypatch)
    # the other process's flags are 0 (MAX: this one's stand), its sums the same (SUM: twice this one's)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t, op=None: t.mul_(2) if op is None else None)
    sent: list[object] = []

    def broadcast(box: list, src: int) -> None:
        if rank == 0:
            sent.append(box[0])
        else:
            box[0] = sent.pop(0)

    monkeypatch.setattr(distributed.dist, "broadcast_object_list", broadcast)
    argv = train_args(tiny_voc, tmp_path / "run", "--stage", "seg", "--max-steps", "1")
    main = train.main
    for rank in (0, 1):
        monkeypatch.setattr(train, "init_distributed", lambda device, r=rank: DistInfo(rank=r, world_size=2))
        finding = r"^\[seg\] non-finite loss and gradients at step 1 \(epoch 1; loss nan\): "
        with pytest.raises(engine.NonFiniteError, match=finding) as stop:
            main(argv)
        assert getattr(stop.value, distributed.PRINTED_BY_RANK_0) == (rank == 1)

        def fails(error: BaseException = stop.value) -> None:
            raise error

        monkeypatch.setattr(train, "main", fails)  # the script's exit status and what it prints
        assert train._cli() == 1
        err = capsys.readouterr().err
        assert ("non-finite loss and gradients at step 1" in err) == (rank == 0), err
    assert sent == []


def test_sync_bn_on_the_cpu_is_refused_before_overwrite_clears_the_old_run(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``torchrun ... --device cpu --sync-bn --stage all --overwrite`` deleted each stage of the old run, then
    each process refused --sync-bn when its first stage built the model: refused now before anything is
    touched, by rank 0 (one copy of the message)."""
    from .helpers import train_args

    old_run = tmp_path / "run"
    for stage in train_options.STAGES:
        (old_run / stage).mkdir(parents=True)
        (old_run / stage / "checkpoint.pt").write_bytes(b"the old run's")
    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=0, world_size=2))
    other = _OtherProcess(monkeypatch)
    argv = train_args(tiny_voc, old_run, "--stage", "all", "--overwrite", "--sync-bn", "--max-steps", "1")
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert all((old_run / s / "checkpoint.pt").is_file() for s in train_options.STAGES), (
        err
    )  # the old run is intact
    assert "--sync-bn needs CUDA" in err and "this run trains on cpu: drop --sync-bn" in err, err
    (_, error), _ = other.broadcasts[0]  # rank 0's first decision, sent to the others: the refusal
    assert error is not None and error[0] == "UsageError" and "--sync-bn" in error[1], other.broadcasts


@pytest.mark.parametrize("sync_bn", [False, True])
def test_sync_bn_in_one_process_is_said_to_be_ignored_as_amp_on_the_cpu(
    sync_bn: bool, tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train.py --sync-bn`` without torchrun trains with plain BatchNorm (there is no process group to
    synchronise over), as ``--amp`` on the CPU trains in float32: it said nothing, where ``--amp`` says
    ``[seg] --amp ignored on cpu (CUDA only)``. It says ``--sync-bn ignored in one process`` now."""
    from .helpers import train_args

    extra = ["--sync-bn"] if sync_bn else []
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1", *extra)
    args = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args(argv))
    state, _ = train.build_train_state("seg", args, DistInfo(), None, steps_per_epoch=1)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in state.model.modules())
    out = capsys.readouterr().out
    assert ("[seg] --sync-bn ignored in one process (DDP only)\n" in out) == sync_bn, out


@pytest.mark.parametrize(
    ("rank", "local_rank", "order"), [(2, 0, ["ensure", "barrier"]), (3, 1, ["barrier", "ensure"])]
)
def test_synthetic_data_is_generated_by_local_rank_0_of_every_machine(
    monkeypatch: pytest.MonkeyPatch, rank: int, local_rank: int, order: list[str]
) -> None:
    """Each machine has its own cache: its local rank 0 generates the set before the barrier (a second
    machine's local rank 0 is not global rank 0), the others check it after."""
    from examples.voc_joint import data

    other = _OtherProcess(monkeypatch)
    monkeypatch.setattr(data, "ensure_synthetic_voc", lambda root: other.calls.append("ensure"))
    info = DistInfo(rank=rank, world_size=4, local_rank=local_rank)
    root = train_data.data_root(argparse.Namespace(data_root=None), info)
    assert root == data.DEFAULT_CACHE / "synthetic_voc" and other.calls == order
    other.calls.clear()
    assert (
        train_data.data_root(argparse.Namespace(data_root="/d/VOC"), info) == Path("/d/VOC")
        and not other.calls
    )


def test_log_rows_average_the_loss_and_its_parts_over_the_processes(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """log.csv's ``loss`` was the mean over the processes but ``ce`` and ``spixel`` rank 0's own, so that
    ``loss = ce + weight x spixel`` did not hold under DDP: all three are means now. The other process of the
    fake group contributes 0, so every logged mean is half of this process's value."""
    import csv

    from examples.voc_joint import engine

    from .helpers import train_args

    argv = train_args(tiny_voc, tmp_path, "--stage", "joint", "--from-scratch", "--log-every", "1")
    args = train_options.resolve_stage_options(
        "joint", train_options.build_parser().parse_args([*argv, "--max-steps", "1"])
    )
    one = DistInfo()
    loader, sampler = train_data.build_train_loader(args, one, tiny_voc)
    state, _ = train.build_train_state("joint", args, one, None, sampler.steps_per_epoch)
    _OtherProcess(monkeypatch, value=0.0, flags=torch.zeros(5))
    own: list[dict[str, float]] = []  # this process's values of each step
    real_step = engine.train_step

    def recording_step(*a, **kw):
        values, stop = real_step(*a, **kw)
        own.append(values)
        return values, stop

    monkeypatch.setattr(engine, "train_step", recording_step)
    logger = engine.CsvLogger(tmp_path, True, False, None)
    try:
        engine.train_one_epoch(
            state, loader, args, DistInfo(rank=0, world_size=2), steps_per_epoch=sampler.steps_per_epoch,
            global_batch=sampler.global_batch, logger=logger,
        )  # fmt: skip
    finally:
        logger.close()
    with open(tmp_path / "log.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    loss, ce, spixel = (float(row[k]) for k in ("loss", "ce", "spixel"))
    assert loss == pytest.approx(ce + args.spixel_loss_weight * spixel, abs=2e-6), row
    assert len(own) == 1 and own[0]["spixel"] > 0, own
    for k in ("loss", "ce", "spixel"):  # the means, not this process's own values
        assert float(row[k]) == pytest.approx(own[0][k] / 2, abs=1e-6), (k, row, own)


def test_a_loss_non_finite_on_another_process_is_reported_as_the_mean_not_this_ones(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss went NaN on rank 1 only: both processes stop, and rank 0 said "non-finite loss and gradients
    at step 1 (epoch 1; loss 3.55)", its own finite loss. The loss reported is the mean over the processes,
    as log.csv's (NaN here)."""
    from examples.voc_joint import engine

    from .helpers import train_args

    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1")
    args = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args(argv))
    one = DistInfo()
    loader, sampler = train_data.build_train_loader(args, one, tiny_voc)
    state, _ = train.build_train_state("seg", args, one, None, sampler.steps_per_epoch)
    batch = next(iter(loader))
    # rank 1's loss is NaN (so are the summed gradients): it contributes NaN to the mean and its flags
    _OtherProcess(monkeypatch, value=float("nan"), flags=torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    with pytest.raises(engine.NonFiniteError) as err:
        engine.train_step(state, batch, args, DistInfo(rank=0, world_size=2), None, False)
    assert err.value.finding == "non-finite loss and gradients at step 1 (epoch 1; loss nan)", err.value
    assert state.step == 0  # nothing was updated


def test_each_process_resumes_with_its_own_rng_state(capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint holds every process's RNG states (by rank); each process restores its own (they all
    restored rank 0's, so a DDP resume was not exact). Another number of processes reseeds from
    ``(seed, rank, step)`` and says so; a single state (checkpoint version 2) counts as one process's."""
    import random

    from examples.voc_joint.checkpoint import get_rng_state
    from examples.voc_joint.sampling import derive_seed

    states = []
    for seed in (10, 11):
        train._seed_everything(seed)
        states.append(get_rng_state())
    args = argparse.Namespace(seed=3)
    train._seed_everything(0)
    train._seed_everything(11)
    expected = (torch.rand(3), random.random())
    train._restore_rng({"rng": states, "step": 4}, args, DistInfo(rank=1, world_size=2), "seg")
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert capsys.readouterr().out == ""
    # 2 processes -> 3: no state for rank 2; every rank reseeds (rank 0 says so)
    train._restore_rng({"rng": states, "step": 4}, args, DistInfo(rank=0, world_size=3), "seg")
    assert torch.initial_seed() == derive_seed(3, 0, 4)
    out = capsys.readouterr().out
    assert out == (
        "[seg] the checkpoint holds the RNG states of 2 processes, this run has 3: every process reseeds "
        "from (--seed 3, its rank, step 4)\n"
    )
    train._restore_rng({"rng": states, "step": 4}, args, DistInfo(rank=2, world_size=3), "seg")
    assert torch.initial_seed() == derive_seed(3, 2, 4) and capsys.readouterr().out == ""
    # version 2: one dict, read as the states of a run of one process
    train._seed_everything(10)
    expected_one = torch.rand(3)
    train._restore_rng({"rng": states[0], "step": 4}, args, DistInfo(), "seg")
    assert torch.equal(torch.rand(3), expected_one)


@pytest.mark.parametrize(
    "mine, other, agreed", [(None, 15.0, 15), (2, 15.0, 15), (15, 2.0, 15), (None, 0.0, 0)]
)
def test_every_process_stops_on_the_largest_signal_any_of_them_recorded(
    mine: int | None, other: float, agreed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processes agree on a signal number, not on a 0/1 flag: a SIGTERM that reached one process only
    ends every process with 143, not Ctrl-C's 130 (SIGTERM wins over SIGINT)."""
    _OtherProcess(monkeypatch, flags=torch.tensor([other]))
    guard = argparse.Namespace(requested=mine)
    assert train._agreed_signal(guard, DistInfo(rank=0, world_size=2)) == agreed  # type: ignore[arg-type]


def test_a_lost_process_is_named_with_the_checkpoint_to_resume_from_or_none(tmp_path: Path) -> None:
    """The one line of a process whose peer is gone: the stage's checkpoint if one is on disk, else none."""
    info = DistInfo(rank=0, world_size=3)
    text = train._lost_text(info, tmp_path / "seg")
    assert text.startswith("another of the 3 processes was lost")
    assert text.endswith("no checkpoint of the seg stage was written yet: run the command again")
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "checkpoint.pt").write_bytes(b"")
    ckpt = tmp_path / "seg" / "checkpoint.pt"
    text = train._lost_text(info, tmp_path / "seg")
    assert text.endswith(f"the last checkpoint of the seg stage, {ckpt}, is intact: continue with --resume")


@pytest.mark.parametrize("signalled", [True, False])
def test_a_process_stopped_by_a_signal_whose_peer_stopped_first_exits_with_the_signals_status(
    signalled: bool,
    tiny_voc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C (SIGINT to every process) during ``--eval``: rank 0 evaluates with the default handlers, so it
    stops at once (130, "evaluation interrupted"); rank 1, waiting for it, recorded the same SIGINT, then saw
    its peer gone, printed "another of the 2 processes was lost (killed or crashed ...)" and exited 1. It
    stops on its own signal now (130). A process without a signal of its own still names the lost peer."""
    import os
    import signal

    from examples.voc_joint.distributed import ProcessLostError
    from examples.voc_joint.signals import Interrupted

    from .helpers import train_args

    def peer_gone(*args, **kwargs):
        if signalled:
            os.kill(os.getpid(), signal.SIGINT)  # recorded by the guard of main()
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41234")

    monkeypatch.setattr(train, "run_stage", peer_gone)
    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=1, world_size=2))
    _OtherProcess(monkeypatch)
    argv = train_args(tiny_voc, tmp_path / "run", "--stage", "seg", "--max-steps", "1", "--eval")
    with pytest.raises((Interrupted, ProcessLostError)) as stop:
        train.main(argv)
    if signalled:
        assert isinstance(stop.value, Interrupted), stop.value
        assert stop.value.exit_code == 130 and not stop.value.forced
    else:
        assert isinstance(stop.value, ProcessLostError), stop.value
        assert str(stop.value).startswith("another of the 2 processes was lost")


def test_a_process_whose_peer_is_lost_after_they_agreed_to_stop_exits_with_the_agreed_signal(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 got a SIGTERM and every process agreed to stop on it; a second SIGTERM then stopped rank 0
    during its checkpoint write (exit status 143). Rank 1, without a signal of its own, saw its peer gone and
    reported a crash ("another of the 2 processes was lost", exit status 1): it stops on the agreed signal
    now (143)."""
    import signal

    from examples.voc_joint.signals import Interrupted

    from .helpers import train_args

    def agree_then_peer_gone(stage, paths, info, guard, **kwargs):
        assert guard.requested is None and train._agreed_signal(guard, info) == signal.SIGTERM
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41234")

    monkeypatch.setattr(train, "run_stage", agree_then_peer_gone)
    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=1, world_size=2))
    _OtherProcess(monkeypatch, flags=torch.tensor([float(signal.SIGTERM)]))
    with pytest.raises(Interrupted) as stop:
        train.main(train_args(tiny_voc, tmp_path / "run", "--stage", "seg", "--max-steps", "1"))
    assert stop.value.exit_code == 143 and not stop.value.forced


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
@pytest.mark.parametrize("in_a_cycle", [False, True])
def test_cleanup_lets_go_of_the_ddp_model_before_it_destroys_the_group(
    in_a_cycle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage interrupted by a signal raises through the frames that hold its DDP model; the model outlived
    ``destroy_process_group`` (the traceback kept it) and, freed later, dropped the gloo group's last
    reference in a destructor that holds the GIL while it waits for gloo's worker thread, itself waiting for
    the GIL: a rank hung after writing its checkpoint (torch 2.11, 1 run in 4 under load, seen in
    test_a_signal_to_one_process_gives_every_process_its_exit_status). The model is gone before the group
    is destroyed now, also a model in a reference cycle (a hook or a closure that refers to it), which only
    the garbage collector frees (automatic collection is off here: it is the cleanup's own collection)."""
    import gc
    import weakref

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    refs: list[weakref.ref[nn.Module]] = []
    model_gone_at_destroy = []
    real_destroy = dist.destroy_process_group

    def destroy(*args: object, **kwargs: object) -> None:
        model_gone_at_destroy.append(refs[0]() is None)
        real_destroy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dist, "destroy_process_group", destroy)

    class Stopped(Exception):
        pass

    def stage() -> None:
        model = DistributedDataParallel(nn.Linear(2, 2))
        refs.append(weakref.ref(model))
        if in_a_cycle:
            model.cycle = [model]
        raise Stopped

    collecting = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(Stopped):
            try:
                stage()
            finally:
                distributed.cleanup_distributed()
    finally:
        if collecting:
            gc.enable()
        if dist.is_initialized():
            real_destroy()
    assert model_gone_at_destroy == [True]


@pytest.mark.parametrize("script", ["evaluate", "demo", "ablation"])
def test_the_one_process_scripts_refuse_a_torchrun_launch(script, tmp_path, monkeypatch, capsys) -> None:
    """Only train.py splits its work between processes: under torchrun evaluate.py, demo.py and ablation.py
    ran whole in every process, writing the same files at the same time. Refused before anything is
    written."""
    import importlib

    module = importlib.import_module(f"examples.voc_joint.{script}")
    out = tmp_path / "out"
    argv = ["--output-dir", str(out)] + (["--checkpoint", __file__] if script == "evaluate" else [])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as info:
        module.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {script}.py runs in one process, got WORLD_SIZE=2 (a torchrun launch)" in err
    assert not out.exists()
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: not refused for that (evaluate then reads the file)
    from examples.voc_joint.cli import one_process_error

    assert one_process_error(f"{script}.py") is None


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9", "\u0663", "", " ", "abc", "-2", "1"])
def test_the_one_process_scripts_run_on_a_world_size_that_is_no_count(value: str) -> None:
    """``WORLD_SIZE=²`` (a digit to ``str.isdigit``, not to ``int``) ended evaluate.py, demo.py and
    ablation.py in "invalid literal for int() with base 10: '²'" before their own options were read; a
    value that is no count of processes is not a torchrun launch to them, as ``abc`` was already."""
    from examples.voc_joint.cli import one_process_error

    assert one_process_error("evaluate.py", {"WORLD_SIZE": value}) is None


def test_a_resume_under_ddp_counts_the_poly_horizon_at_the_global_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seg run of 2 processes x batch 2 (global batch 4), 3 steps per epoch, 3 epochs, resumed at step 4,
    8 samples into epoch 2: one step is left in that epoch, so the poly schedule's horizon is 4 + 1 + 3 = 8.
    Counting the epoch's samples at one process's batch (2) instead finds none left (horizon 7): the schedule
    would reach 0 before the last step. The torchrun tests resume at an epoch boundary only, where both give
    the same horizon."""
    from examples.voc_joint.checkpoint import load_checkpoint

    from .helpers import train_args, untrained_checkpoints

    seg, _ = untrained_checkpoints(tmp_path / "nets")
    ckpt = {**load_checkpoint(seg), "step": 4, "epoch": 1, "samples_in_epoch": 8, "world_size": 2}
    argv = train_args(tmp_path, tmp_path / "run", "--stage", "seg", "--epochs", "3", "--batch-size", "2")
    args = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args(argv))
    horizons: list[int] = []

    class _SchedulerBuilt(Exception):
        pass

    def recording_scheduler(optimizer, args, horizon):  # the horizon is all this test needs
        horizons.append(horizon)
        raise _SchedulerBuilt

    monkeypatch.setattr(train, "build_scheduler", recording_scheduler)
    with pytest.raises(_SchedulerBuilt):
        train.build_train_state("seg", args, DistInfo(rank=0, world_size=2), ckpt, steps_per_epoch=3)
    assert horizons == [8], f"poly horizon {horizons} of a DDP resume mid-epoch, expected [8] (4 + 1 + 3)"


@pytest.mark.parametrize("stage", ["seg", "joint"])
def test_ddp_looks_for_unused_parameters_in_the_joint_stage_only(
    stage: str, tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The joint stage may leave parameters without a gradient (--mode hard with --spixel-loss-weight 0: no
    gradient reaches SpixelFCN), which DDP refuses at the second step unless told to look for them; the
    pretraining stages use every parameter (looking costs a graph traversal per step). The torchrun tests
    train with --mode soft, where every parameter gets a gradient, so they pass either way."""
    from .helpers import train_args

    extra = ["--from-scratch", "--mode", "hard", "--spixel-loss-weight", "0"] if stage == "joint" else []
    argv = train_args(tiny_voc, tmp_path, "--stage", stage, "--max-steps", "1", *extra)
    args = train_options.resolve_stage_options(stage, train_options.build_parser().parse_args(argv))
    wrapped: list[dict] = []

    def recording_ddp(model, **kwargs):  # no process group here: record how the model would be wrapped
        wrapped.append(kwargs)
        return model

    monkeypatch.setattr(train.nn.parallel, "DistributedDataParallel", recording_ddp)
    train.build_train_state(stage, args, DistInfo(rank=0, world_size=2), None, steps_per_epoch=1)
    assert [w["find_unused_parameters"] for w in wrapped] == [stage == "joint"], (
        f"{stage} stage wrapped as {wrapped}: find_unused_parameters must be {stage == 'joint'}"
    )


def test_a_process_lost_in_a_later_stage_of_stage_all_names_that_stage(
    tiny_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--stage all``: a peer lost while the joint stage runs is reported with the joint stage's folder
    (its checkpoint to resume from, or none yet), not with the first stage's, whose checkpoint is finished."""
    from examples.voc_joint.distributed import ProcessLostError

    from .helpers import train_args

    ran: list[str] = []

    def peer_gone_in_joint(stage, paths, info, guard, **kwargs):
        ran.append(stage)
        if stage == "joint":
            raise RuntimeError(
                "[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41234"
            )
        return tmp_path / "run" / stage / "checkpoint.pt"

    monkeypatch.setattr(train, "run_stage", peer_gone_in_joint)
    monkeypatch.setattr(train, "init_distributed", lambda device: DistInfo(rank=1, world_size=2))
    _OtherProcess(monkeypatch)
    with pytest.raises(ProcessLostError) as lost:
        train.main(train_args(tiny_voc, tmp_path / "run", "--stage", "all", "--max-steps", "1"))
    assert ran == ["seg", "spixel", "joint"], ran
    assert str(lost.value).endswith("no checkpoint of the joint stage was written yet: run the command again")
