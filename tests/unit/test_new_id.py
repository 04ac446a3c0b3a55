"""Outgoing events get their ids from `new_id` (a fifth of `uuid.uuid4()`'s cost: random bytes for
256 ids read from the OS at once)."""

from __future__ import annotations

import os
import sys
import threading
import uuid

from contracts.events import new_id


def test_new_ids_are_random_version_4_uuids() -> None:
    ids = [new_id() for _ in range(2000)]  # past the 256 ids of one read of random bytes, several times
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, i)


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    """The child of a fork has a copy of the parent's unread random bytes: it must not use them,
    or parent and child would hand out the same ids."""
    new_id()  # random bytes read, most still unused
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, ",".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split(",")
    os.close(read)
    assert len(child) == 3
    assert not set(child) & {new_id() for _ in range(3)}


def test_threads_never_share_an_id() -> None:
    """FastAPI runs plain `def` endpoints on worker threads, beside the event loop's: two threads
    drawing ids at once must not read the same random bytes."""
    per_thread, threads = 20_000, 8
    results: list[list[str]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def draw(out: list[str]) -> None:
        barrier.wait()
        out.extend(new_id() for _ in range(per_thread))

    workers = [threading.Thread(target=draw, args=(results[i],)) for i in range(threads)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(old)
    ids = [i for out in results for i in out]
    assert len(ids) == per_thread * threads
    assert len(set(ids)) == len(ids)


def test_each_thread_reads_random_bytes_of_its_own(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What keeps two threads from handing out one id without depending on a race to show it: a
    thread's first id reads random bytes of its own, even while another thread's are unused."""
    from contracts import events

    monkeypatch.setattr(events, "_random", events._RandomHex())  # this thread: nothing read yet
    reads: list[int] = []
    urandom = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: reads.append(n) or urandom(n))
    new_id()
    new_id()  # the same thread: from the bytes already read
    assert len(reads) == 1
    other = threading.Thread(target=new_id)
    other.start()
    other.join()
    assert len(reads) == 2, "another thread drew from this thread's random bytes"
