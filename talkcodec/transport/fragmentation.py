"""Keyframe fragments: how a KEYFRAME packet larger than one data-channel message travels.

Every message on the `keyframe` channel is one KeyframeFragment (a keyframe that fits in one
message is a single fragment with count 1). The layout is documented in docs/bitstream.md.
The channel is ordered and reliable, so fragments normally arrive complete and in order; the
Reassembler still accepts any order, ignores exact duplicates and drops inconsistent input,
because a message from the network is never trusted.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass

from talkcodec.bitstream import BitstreamError

logger = logging.getLogger(__name__)

_FRAGMENT_HEADER = struct.Struct("!HHH")  # keyframe_id | index | count
FRAGMENT_HEADER_BYTES = _FRAGMENT_HEADER.size  # 6
_U16_MAX = 0xFFFF
# 16 KiB: the message size every WebRTC stack delivers without its own fragmentation quirks.
DEFAULT_FRAGMENT_BYTES = 16 * 1024


@dataclass(frozen=True)
class KeyframeFragment:
    """keyframe_id u16 | index u16 | count u16 | data (>= 1 byte, to the end of the message).

    keyframe_id counts the keyframes of a stream modulo 2**16; fragment `index` (0-based) of
    `count` carries bytes of the whole packet, in order: concatenating data of indices 0..count-1
    gives the KEYFRAME packet's bytes.
    """

    keyframe_id: int
    index: int
    count: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.keyframe_id <= _U16_MAX:
            raise ValueError(f"keyframe_id must be in 0..{_U16_MAX}, got {self.keyframe_id}")
        if not 1 <= self.count <= _U16_MAX:
            raise ValueError(f"count must be in 1..{_U16_MAX}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"index must be in 0..{self.count - 1}, got {self.index}")
        if not self.data:
            raise ValueError("fragment data must not be empty")

    def __bytes__(self) -> bytes:
        return _FRAGMENT_HEADER.pack(self.keyframe_id, self.index, self.count) + self.data

    @classmethod
    def parse(cls, message: bytes) -> KeyframeFragment:
        """The fragment that is the whole of `message`."""
        if len(message) < FRAGMENT_HEADER_BYTES + 1:
            raise BitstreamError(
                f"keyframe fragment needs at least {FRAGMENT_HEADER_BYTES + 1} bytes, "
                f"got {len(message)}"
            )
        keyframe_id, index, count = _FRAGMENT_HEADER.unpack_from(message)
        if count == 0:
            raise BitstreamError("keyframe fragment count: expected >= 1, found 0")
        if index >= count:
            raise BitstreamError(
                f"keyframe fragment index: expected < count {count}, found {index}"
            )
        return cls(keyframe_id, index, count, bytes(message[FRAGMENT_HEADER_BYTES:]))


def fragment(packet: bytes, keyframe_id: int, max_message_bytes: int) -> list[KeyframeFragment]:
    """Split one packet's bytes into fragments whose messages are at most max_message_bytes."""
    room = max_message_bytes - FRAGMENT_HEADER_BYTES
    if room < 1:
        raise ValueError(
            f"max_message_bytes must exceed the {FRAGMENT_HEADER_BYTES}-byte fragment header, "
            f"got {max_message_bytes}"
        )
    if not packet:
        raise ValueError("cannot fragment an empty packet")
    count = -(-len(packet) // room)
    if count > _U16_MAX:
        raise ValueError(f"packet of {len(packet)} bytes needs {count} fragments, max {_U16_MAX}")
    return [
        KeyframeFragment(keyframe_id, index, count, packet[index * room : (index + 1) * room])
        for index in range(count)
    ]


class _Assembly:
    """The fragments of one keyframe received so far."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.parts: dict[int, bytes] = {}
        self.size = 0


class Reassembler:
    """Collects fragments and returns each keyframe packet once all its fragments are in.

    At most `max_pending` keyframes are assembled at once (the oldest is abandoned when a new
    one starts) and none may exceed `max_packet_bytes`, so a hostile sender cannot make the
    receiver hold much memory. add() raises BitstreamError for a malformed or inconsistent
    fragment and abandons that keyframe; the caller counts it and carries on.
    """

    def __init__(self, max_pending: int = 4, max_packet_bytes: int = 4 * 1024 * 1024) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self.max_packet_bytes = max_packet_bytes
        self._pending: OrderedDict[int, _Assembly] = OrderedDict()
        self._completed: deque[int] = deque(maxlen=8)
        self.duplicates = 0
        self.abandoned = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, message: bytes) -> bytes | None:
        """The whole packet when `message` completes one, else None."""
        part = KeyframeFragment.parse(message)
        if part.keyframe_id in self._completed:
            self.duplicates += 1
            return None
        assembly = self._assembly_for(part)
        known = assembly.parts.get(part.index)
        if known is not None:
            if known != part.data:
                self._abandon(part.keyframe_id)
                raise BitstreamError(
                    f"keyframe {part.keyframe_id} fragment {part.index} arrived twice "
                    "with different bytes"
                )
            self.duplicates += 1
            return None
        assembly.parts[part.index] = part.data
        assembly.size += len(part.data)
        if assembly.size > self.max_packet_bytes:
            self._abandon(part.keyframe_id)
            raise BitstreamError(
                f"keyframe {part.keyframe_id} exceeds {self.max_packet_bytes} bytes "
                f"after {len(assembly.parts)} fragments"
            )
        if len(assembly.parts) < assembly.count:
            return None
        del self._pending[part.keyframe_id]
        self._completed.append(part.keyframe_id)
        return b"".join(assembly.parts[index] for index in range(assembly.count))

    def _assembly_for(self, part: KeyframeFragment) -> _Assembly:
        assembly = self._pending.get(part.keyframe_id)
        if assembly is None:
            while len(self._pending) >= self.max_pending:
                oldest, _ = self._pending.popitem(last=False)
                self.abandoned += 1
                logger.debug("abandoned incomplete keyframe %d", oldest)
            assembly = self._pending[part.keyframe_id] = _Assembly(part.count)
        elif assembly.count != part.count:
            self._abandon(part.keyframe_id)
            raise BitstreamError(
                f"keyframe {part.keyframe_id} fragment count: expected {assembly.count}, "
                f"found {part.count}"
            )
        return assembly

    def _abandon(self, keyframe_id: int) -> None:
        if self._pending.pop(keyframe_id, None) is not None:
            self.abandoned += 1
