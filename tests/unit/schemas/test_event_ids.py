"""UUIDv7 text as the standard library spells it, the randomness of event
ids, and new_event's type."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachet.schemas.events import (
    _ID_RANDOMNESS,
    SAMPLE_PAYLOADS,
    EventType,
    new_event,
    uuid7,
)


@given(st.integers(0, 2**48 * 1000 - 1), st.binary(min_size=8, max_size=8))
def test_uuid7_text_is_the_canonical_uuid_text(now_us: int, rand: bytes) -> None:
    text = uuid7(now_us, rand=lambda n: rand)
    # Spelled out by hand on the hot path: must equal what uuid.UUID prints.
    assert text == str(uuid.UUID(text))
    assert uuid.UUID(text).version == 7


def test_new_event_takes_a_type_by_member_or_by_name() -> None:
    payload = SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN]
    for given_type in (EventType.CACHE_WRITTEN, "CacheWritten"):
        event = new_event(given_type, payload, producer_id="p", producer_seq=0)  # type: ignore[arg-type]
        assert event.type is EventType.CACHE_WRITTEN


def test_id_randomness_hands_each_byte_out_once_across_threads() -> None:
    draws: list[bytes] = []

    def draw() -> None:
        mine = [_ID_RANDOMNESS(8) for _ in range(2000)]
        draws.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 8000 draws spanning several blocks: a draw handed out twice would repeat.
    assert len(draws) == 8000 and len(set(draws)) == 8000
    assert all(len(d) == 8 for d in draws)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_reuses_its_parents_block() -> None:
    _ID_RANDOMNESS(8)  # the parent holds a block with unread bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next draws, to the parent
        try:
            os.write(write, b"".join(_ID_RANDOMNESS(8) for _ in range(4)))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(_ID_RANDOMNESS(8) for _ in range(4))
    # Without the at-fork reset both would read the same rest of one block.
    assert len(child) == 32 and child != parent
