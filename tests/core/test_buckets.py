"""The disk store's token buckets in one mapped file: real processes taking from one
bucket never admit more than its capacity, buckets refill, a full table forgets the
stalest bucket, a damaged file is rebuilt, and a dead lock holder frees the table."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from core.store import StoreUnavailable
from core.store.buckets import LOCK_WAIT, PROBE, BucketTable, table_size

SPAWN = multiprocessing.get_context("spawn")  # each child opens the table itself


def take_many(path: str, start, key: str, takes: int, capacity: float, results) -> None:
    """In a child process: open the table, wait for the others, take `takes` times."""
    table = BucketTable(path)
    start.wait(timeout=30)
    results.put(sum(table.take(key, capacity=capacity, per_second=0.001).allowed for _ in range(takes)))
    table.close()


def hold_the_lock(path: str, held) -> None:
    """In a child process: take the table's lock, say so, and keep it until killed."""
    table = BucketTable(path)
    with table.locked():
        held.set()
        time.sleep(60)


@pytest.mark.slow
def test_processes_taking_from_one_bucket_together_never_admit_more_than_its_capacity(tmp_path):
    # Each process alone would take 5,000 (some 30 ms): the four overlap on the cores.
    path, processes, takes, capacity = str(tmp_path / "buckets.shm"), 4, 5000, 10_000
    start, results = SPAWN.Barrier(processes), SPAWN.Queue()
    children = [SPAWN.Process(target=take_many, args=(path, start, "client", takes, capacity, results))
                for _ in range(processes)]
    for child in children:
        child.start()
    admitted = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=10)
    assert sum(admitted) == capacity  # 20,000 takes, no refill to speak of: exactly the capacity
    assert not BucketTable(path).take("client", capacity=capacity, per_second=0.001).allowed


def test_two_openings_share_each_bucket_and_it_refills_at_its_rate(tmp_path):
    first, second = BucketTable(tmp_path / "b.shm"), BucketTable(tmp_path / "b.shm")
    taken = [table.take("k", capacity=3, per_second=2.0, now=100.0) for table in (first, second, first, second)]
    assert [t.allowed for t in taken] == [True, True, True, False]
    assert [t.tokens for t in taken] == [2.0, 1.0, 0.0, 0.0]
    assert not second.take("k", capacity=3, per_second=2.0, now=100.25).allowed  # half a token
    assert first.take("k", capacity=3, per_second=2.0, now=100.5).allowed        # one token
    assert second.take("k", capacity=3, per_second=2.0, now=200.0).tokens == 2.0  # full again, then one taken
    assert first.take("other", capacity=3, per_second=2.0, now=200.0).tokens == 2.0  # per key


def test_a_full_table_reuses_expired_slots_first_then_forgets_the_stalest_bucket(tmp_path):
    table = BucketTable(tmp_path / "b.shm", slots=PROBE)  # every key's window is the whole table
    slow = {"capacity": 1, "per_second": 0.001}            # an emptied bucket stays empty for 1,000 s
    assert table.take("old", now=0.0, **slow).allowed
    for n in range(1, PROBE):
        assert table.take(f"brief-{n}", capacity=1, per_second=1.0, now=1.0).allowed  # expire at 2.0
    assert table.take("new", now=5.0, **slow).allowed  # reuses an expired slot…
    assert not table.take("old", now=6.0, **slow).allowed  # …not the stalest live bucket
    for n in range(1, PROBE - 1):  # the six expired slots left
        assert table.take(f"slow-{n}", now=10.0 + n, **slow).allowed  # every slot live now
    assert not table.take("new", now=20.0, **slow).allowed  # each live bucket still remembered…
    assert table.take("newest", now=21.0, **slow).allowed
    assert table.take("old", now=22.0, **slow).allowed     # …but "old" was the stalest: forgotten, full


def test_a_short_or_overwritten_file_is_rebuilt_with_every_bucket_full(tmp_path):
    path = tmp_path / "b.shm"
    path.write_bytes(b"not a bucket table")
    table = BucketTable(path)
    assert path.stat().st_size == table_size(table.slots)
    assert table.take("k", capacity=1, per_second=0.001).allowed
    assert not table.take("k", capacity=1, per_second=0.001).allowed
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xff" * 64, 0)  # the header overwritten while mapped
        assert table.take("k", capacity=1, per_second=0.001).allowed
        os.ftruncate(fd, 10)            # cut short while mapped: rebuilt, no SIGBUS
        assert table.take("k", capacity=1, per_second=0.001).allowed
        assert path.stat().st_size == table_size(table.slots)
    finally:
        os.close(fd)
    assert not table.take("k", capacity=1, per_second=0.001).allowed


@pytest.mark.slow
def test_a_stalled_lock_holder_makes_takes_give_up_and_its_death_frees_the_table(tmp_path):
    path = tmp_path / "b.shm"
    table = BucketTable(path)
    held = SPAWN.Event()
    holder = SPAWN.Process(target=hold_the_lock, args=(str(path), held))
    holder.start()
    try:
        assert held.wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):  # the rate limiter's local fallback answers
            table.take("k", capacity=5, per_second=1.0)
        assert time.monotonic() - started < LOCK_WAIT + 0.5
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the lock: the kernel releases it
        holder.join(timeout=10)
        started = time.monotonic()
        assert table.take("k", capacity=5, per_second=1.0).allowed
        assert time.monotonic() - started < 0.05
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()
