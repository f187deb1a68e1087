"""Keyframe fragments: exact layout, and reassembly under any split, order and duplication."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talkcodec.bitstream import BitstreamError
from talkcodec.transport.fragmentation import (
    FRAGMENT_HEADER_BYTES,
    KeyframeFragment,
    Reassembler,
    fragment,
)


def test_fragment_layout_is_id_index_count_then_data() -> None:
    part = KeyframeFragment(keyframe_id=258, index=1, count=3, data=b"\xab")
    assert bytes(part) == b"\x01\x02\x00\x01\x00\x03\xab"
    assert KeyframeFragment.parse(bytes(part)) == part


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"", "keyframe fragment needs at least 7 bytes, got 0"),
        (b"\x00\x00\x00\x00\x00\x01", "keyframe fragment needs at least 7 bytes, got 6"),
        (b"\x00\x00\x00\x00\x00\x00x", "keyframe fragment count: expected >= 1, found 0"),
        (b"\x00\x00\x00\x02\x00\x02x", "keyframe fragment index: expected < count 2, found 2"),
    ],
)
def test_malformed_fragments_raise_with_exact_messages(message: bytes, error: str) -> None:
    with pytest.raises(BitstreamError) as raised:
        KeyframeFragment.parse(message)
    assert str(raised.value) == error


def test_every_message_respects_the_size_limit() -> None:
    packet = bytes(range(256)) * 40
    parts = fragment(packet, 7, 1000)
    assert all(len(bytes(part)) <= 1000 for part in parts)
    assert len(parts) == -(-len(packet) // (1000 - FRAGMENT_HEADER_BYTES))
    assert b"".join(part.data for part in parts) == packet


def test_fragment_rejects_a_limit_below_the_header() -> None:
    with pytest.raises(ValueError, match="must exceed the 6-byte fragment header"):
        fragment(b"abc", 0, FRAGMENT_HEADER_BYTES)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=4),
    limit=st.integers(FRAGMENT_HEADER_BYTES + 1, 700),
    seed=st.integers(0, 2**32 - 1),
    duplicate_rate=st.floats(0, 0.5),
)
def test_any_interleaving_with_duplicates_reassembles_each_packet_once(
    sizes: list[int], limit: int, seed: int, duplicate_rate: float
) -> None:
    rng = random.Random(seed)
    packets = [rng.randbytes(size) for size in sizes]
    messages = [
        bytes(part)
        for keyframe_id, packet in enumerate(packets)
        for part in fragment(packet, keyframe_id, limit)
    ]
    messages += [message for message in messages if rng.random() < duplicate_rate]
    rng.shuffle(messages)
    reassembler = Reassembler(max_pending=len(packets), max_packet_bytes=10_000)
    out = [packet for message in messages if (packet := reassembler.add(message)) is not None]
    assert sorted(out) == sorted(packets)
    assert reassembler.pending == 0


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 2000),
    limit=st.integers(FRAGMENT_HEADER_BYTES + 1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_corrupt_fragments_raise_or_are_dropped_never_crash(
    size: int, limit: int, seed: int
) -> None:
    """Flip bits anywhere in the fragments: add() raises BitstreamError or returns bytes/None,
    and a later intact keyframe still comes through. (One bit flip never turns id 1 into 2.)"""
    rng = random.Random(seed)
    packet = rng.randbytes(size)
    reassembler = Reassembler(max_pending=2, max_packet_bytes=4000)
    for part in fragment(packet, 1, limit):
        message = bytearray(bytes(part))
        if rng.random() < 0.5:
            message[rng.randrange(len(message))] ^= 1 << rng.randrange(8)
        with contextlib.suppress(BitstreamError):
            reassembler.add(bytes(message))
    intact = rng.randbytes(size)
    results = [reassembler.add(bytes(part)) for part in fragment(intact, 2, limit)]
    assert results[-1] == intact


def test_conflicting_duplicate_abandons_the_keyframe() -> None:
    reassembler = Reassembler()
    parts = fragment(b"x" * 50, 3, 30)
    reassembler.add(bytes(parts[0]))
    changed = KeyframeFragment(3, 0, parts[0].count, b"y" * len(parts[0].data))
    with pytest.raises(BitstreamError, match="keyframe 3 fragment 0 arrived twice"):
        reassembler.add(bytes(changed))
    assert reassembler.pending == 0 and reassembler.abandoned == 1


def test_inconsistent_count_abandons_the_keyframe() -> None:
    reassembler = Reassembler()
    reassembler.add(bytes(KeyframeFragment(5, 0, 3, b"a")))
    with pytest.raises(BitstreamError, match="keyframe 5 fragment count: expected 3, found 4"):
        reassembler.add(bytes(KeyframeFragment(5, 1, 4, b"b")))


def test_oversized_keyframe_is_abandoned() -> None:
    reassembler = Reassembler(max_packet_bytes=100)
    parts = fragment(b"z" * 300, 0, 60)
    with pytest.raises(BitstreamError, match="keyframe 0 exceeds 100 bytes"):
        for part in parts:
            reassembler.add(bytes(part))


def test_too_many_pending_keyframes_evict_the_oldest() -> None:
    reassembler = Reassembler(max_pending=2)
    for keyframe_id in range(3):
        reassembler.add(bytes(KeyframeFragment(keyframe_id, 0, 2, b"a")))
    assert reassembler.pending == 2 and reassembler.abandoned == 1
    assert reassembler.add(bytes(KeyframeFragment(0, 1, 2, b"b"))) is None  # 0 was evicted
