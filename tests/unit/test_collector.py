"""The collector pause around bulk event-log reads: it pauses, resumes, nests, survives errors and threads, and
never turns on a collector someone else had turned off."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import weakref
from collections.abc import Iterator

import pytest

from backup_pipelines.collector import paused_gc


@pytest.fixture(autouse=True)
def collector_running() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_paused_inside_and_running_after() -> None:
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_still_resumes_the_collector() -> None:
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("the read failed")
    assert gc.isenabled()


def test_nested_blocks_resume_only_when_the_outer_one_ends() -> None:
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()


@contextlib.contextmanager
def read_in_another_thread() -> Iterator[None]:
    """Run a paused read in another thread for the block: it has begun when the block starts and ends after."""
    inside, release = threading.Event(), threading.Event()

    def reader() -> None:
        with paused_gc():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join(10)


def test_overlapping_blocks_in_threads_resume_when_the_last_one_ends() -> None:
    with read_in_another_thread():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the thread's read is still running: the collector stays paused"
    assert gc.isenabled()


def test_cycles_made_during_the_pause_are_collected_after_it() -> None:
    class Node:
        partner: object = None

    with paused_gc():
        first, second = Node(), Node()
        first.partner, second.partner = second, first
        watched = weakref.ref(first)
        del first, second
        assert watched() is not None, "a cycle is not freed by reference counting"
    gc.collect()
    assert watched() is None


def test_a_child_forked_while_another_thread_reads_gets_its_collector_back() -> None:
    with read_in_another_thread():
        pid = os.fork()
        if pid == 0:  # the child: the reading thread does not exist here, so its block never ends
            os._exit(0 if gc.isenabled() else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child kept the collector paused"
    assert gc.isenabled()


def test_a_child_forked_inside_the_block_leaves_it_with_the_collector_running() -> None:
    with paused_gc():
        pid = os.fork()
    if pid == 0:  # the child left the block its parent opened: nothing must stay paused or go below zero
        with paused_gc():
            paused = not gc.isenabled()
        os._exit(0 if paused and gc.isenabled() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.isenabled()
