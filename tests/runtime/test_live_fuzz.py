"""A running loopback call (talkcodec.runtime.call.loopback_call: the real sender and receiver)
fuzzed from the sender's side. While frames flow, every kind of bad message goes out on each of
the three data channels: text, oversized, random, truncated, bit-flipped and otherwise damaged
copies of messages the sender really sent, messages of the wrong kind on the wrong channel,
control messages of unknown kinds, stream headers with garbage, and keyframe fragments that
never complete. Each must be dropped and counted, the call must go on rendering, nothing may
raise, and memory must stay bounded.

The damage comes from talkcodec.fuzzing's mutation helpers. What the receiver must count is
predicted by the library's own parsers (a Reassembler, parse_control) fed every message in the
order it arrived, the sender's own ones included (they share the reassembler): exactly for the
`keyframe` and `control` channels and for text and oversized messages. The decoder's verdicts on
the `keypoints` channel depend on its timeline when each message lands, so they get lower bounds.

First, before any garbage, one keypoint message whose seq was moved 8 s ahead: the decoder's
timeline accepts it (its implied time follows its seq), every real packet after it comes late,
and the picture would freeze until the stream caught up; the receiver must notice and ask for
the keyframe whose fresh start resets the timeline.

One call (about 15 s) runs once for the module; each test checks one promise of its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest

from talkcodec.bitstream import (
    COMPACT_SEQ_MODULO,
    BitstreamError,
    Packet,
    PacketFlags,
    PacketKind,
    PacketReader,
    PacketWriter,
    StreamHeader,
    compact_timed,
)
from talkcodec.codec import StreamEncoder
from talkcodec.config import ReceiverConfig, SenderConfig
from talkcodec.fuzzing import flip_bits, mutate_message, truncate
from talkcodec.runtime import call
from talkcodec.runtime.receiver import CallReceiver
from talkcodec.runtime.sources import ArraySource
from talkcodec.transport.control import (
    ControlKind,
    KeyframeRequest,
    KeyframeRequestReason,
    ReceiverReport,
    RefreshRequest,
    StreamHeaderMessage,
    parse_control,
)
from talkcodec.transport.fragmentation import FRAGMENT_HEADER_BYTES, KeyframeFragment, Reassembler
from talkcodec.transport.peer import CHANNEL_LABELS, CallChannels
from tests.runtime.test_loopback import FPS, GRADIENT, MESH_WARP, replay_encoder

SEED = 14
# Small enough that oversized messages stay far below SCTP's 64 KiB message limit.
MAX_MESSAGE_BYTES = 4096
FRAGMENT_BYTES = 1000  # the real keyframe comes in several fragments
CASES_PER_CHANNEL = 30  # messages of each family sent on every channel
NEVER_COMPLETE = 600  # keyframes of distinct ids of which one fragment is sent
MEMORY_BURST = 2500  # garbage messages (several MB) while traced memory is watched
# The call's own state moves by a few hundred kB at any moment (frames in flight, references
# replaced by the keyframes the fuzzing provokes); garbage that stayed would be megabytes.
MEMORY_GROWTH_BOUND_BYTES = 1 << 20
SETTLE_S = 0.1  # for the last keypoints-channel messages, which nothing acknowledges
SETTLE_TIMEOUT_S = 30.0  # a busy machine carries a burst of megabytes slowly
TAIL_S = 2.0  # clean frames at the end
# How far one damaged keypoint message moves the decoder's timeline ahead: 8 s of frames, which
# KeypointTimeline finds plausible for a packet whose time is implied by its seq.
JUMP_PACKETS = 200
RECOVERY_BOUND_S = 3.0  # a fresh start the receiver asks for, instead of 8 s of frozen picture
JUMP_WATCH_S = 12.0
FREEZE_S = 0.5  # no frame for this long (12 frame periods) is a frozen picture
FREEZE_RESUMED_FRAMES = 10
CALL_LIMIT_S = 120.0  # the source's length; the fuzzer ends the call long before
# Ids of crafted keyframe fragments, far from the sender's (which count up from 0).
CRAFTED_ID_BASE = 0x8000
NEVER_COMPLETE_ID_BASE = 0x9000
# Control messages that only a receiver sends: a receiver counts them as unexpected.
RECEIVER_TO_SENDER = (KeyframeRequest, RefreshRequest, ReceiverReport)
DECODER_DROPS = ("corrupt", "unknown_kind", "implausible", "late", "wrong_channel")
# What counts garbage (and not also lost or reordered packets), of what _counters() gives.
GARBAGE_COUNTS = (
    *("text_message", "oversize", "bad_fragment", "bad_control", "unexpected_control"),
    *("corrupt", "unknown_kind", "implausible", "wrong_channel"),
    *("fragment_duplicates", "fragments_abandoned"),
)
# Frames decoded per real keypoint frame that arrived, at the least, where the picture must
# move: a frame lost on the way (in its own message and in the next one's repeat prefix) costs
# the frames until the intra refresh the receiver asks for, and under a burst of megabytes
# that refresh waits behind the burst in the sender's queue.
DECODED_PER_FRAME = 0.5

Message = bytes | str


class Oracle:
    """The receiver's counts predicted from the messages as they arrive (a listener beside
    the receiver's own on each channel): the same parsers fed the same messages in order."""

    def __init__(self) -> None:
        self.drops: Counter[str] = Counter()
        self.reassembler = Reassembler()
        self.arrived: Counter[str] = Counter()
        # Keypoint-channel messages and reassembled keyframe-channel packets whose packets a
        # decoder must count as wrong_channel, with how many packets they hold.
        self.wrong_kind: dict[tuple[str, bytes], int] = {}
        self.wrong_channel = 0
        # The keypoints channel may lose messages: which of the injected and the real ones
        # (with their packet counts) arrived.
        self.injected_keypoints: Counter[bytes] = Counter()
        # Each real keypoint message's packets, by seq (a repeat prefix holds the previous
        # message's again, so a frame can arrive twice).
        self.real_keypoints: dict[bytes, tuple[int, ...]] = {}
        self.injected_keypoints_arrived = 0
        self.real_frames_arrived = 0  # distinct ones: packets of a seq not seen before
        self._seqs_arrived: set[int] = set()

    def listen(self, channels: CallChannels) -> None:
        for name in CHANNEL_LABELS:
            getattr(channels, name).on("message", lambda m, name=name: self.see(name, m))

    def see(self, channel: str, message: Message) -> None:
        self.arrived[channel] += 1
        if channel == "keypoints" and isinstance(message, bytes):
            self._see_keypoints(message)
        if isinstance(message, str):
            self.drops["text_message"] += 1
        elif len(message) > MAX_MESSAGE_BYTES:
            self.drops["oversize"] += 1
        elif channel == "keyframe":
            self._see_fragment(message)
        elif channel == "control":
            self._see_control(message)
        else:
            self.wrong_channel += self.wrong_kind.get((channel, message), 0)

    def _see_keypoints(self, message: bytes) -> None:
        if self.injected_keypoints[message] > 0:
            self.injected_keypoints[message] -= 1
            self.injected_keypoints_arrived += 1
        elif message in self.real_keypoints:
            seqs = self.real_keypoints[message]
            self.real_frames_arrived += len(set(seqs) - self._seqs_arrived)
            self._seqs_arrived.update(seqs)

    def _see_fragment(self, message: bytes) -> None:
        try:
            packet = self.reassembler.add(message)
        except BitstreamError:
            self.drops["bad_fragment"] += 1
            return
        if packet is not None:
            self.wrong_channel += self.wrong_kind.get(("keyframe", packet), 0)

    def _see_control(self, message: bytes) -> None:
        try:
            control = parse_control(message)
        except BitstreamError:
            self.drops["bad_control"] += 1
            return
        if isinstance(control, RECEIVER_TO_SENDER):  # a repeated stream header is no fault
            self.drops["unexpected_control"] += 1

    def fragments(self) -> dict[str, int]:
        """What the receiver's summary must say of its keyframe fragments."""
        return {
            "duplicates": self.reassembler.duplicates,
            "abandoned": self.reassembler.abandoned,
            "in_progress": self.reassembler.pending,
        }


class SenderTap:
    """The sender's channels of a loopback call: keeps the messages the real sender sends (to
    damage copies of them) and injects messages beside them."""

    def __init__(self, channels: CallChannels, header: StreamHeader, oracle: Oracle) -> None:
        self.channels = channels
        self.header = header
        self.oracle = oracle
        self.real: dict[str, list[bytes]] = {name: [] for name in CHANNEL_LABELS}
        self.first_keyframe: list[bytes] = []  # the fragments of the sender's first keyframe
        self.sent: Counter[str] = Counter()
        # The real keypoint messages parsed, and written again, in order as the sender's
        # reader and writer do, for their packet counts and the writer's implied times.
        self.packets_in: dict[bytes, int] = {}
        self.last_predicted: Packet | None = None  # the newest real non-intra keypoint packet
        self.reader, self.writer = PacketReader(header), PacketWriter(header)
        self._send: dict[str, Callable[[Message], None]] = {}
        for name in CHANNEL_LABELS:
            channel = getattr(channels, name)
            self._send[name] = channel.send
            channel.send = lambda message, name=name: self._send_real(name, message)

    def _send_real(self, channel: str, message: bytes) -> None:
        self.real[channel].append(message)
        del self.real[channel][:-64]  # recent ones are enough to damage
        if channel == "keypoints":
            packets = self.reader.parse(message)
            self.writer.pack_bundle(packets)
            self.packets_in[message] = len(packets)
            self.oracle.real_keypoints[message] = tuple(packet.seq for packet in packets)
            self.last_predicted = next(
                (p for p in reversed(packets) if not p.is_intra), self.last_predicted
            )
        elif channel == "keyframe" and KeyframeFragment.parse(message).keyframe_id == 0:
            self.first_keyframe.append(message)
        self.sent[channel] += 1
        self._send[channel](message)

    def inject(self, channel: str, message: Message) -> None:
        if channel == "keypoints" and isinstance(message, bytes):
            self.oracle.injected_keypoints[message] += 1
        self.sent[channel] += 1
        self._send[channel](message)

    def buffered(self) -> int:
        return sum(getattr(self.channels, name).bufferedAmount for name in CHANNEL_LABELS)


# -- what is injected ---------------------------------------------------------------------


def _receiver_controls() -> list[bytes]:
    return [
        bytes(KeyframeRequest(KeyframeRequestReason.NO_REFERENCE)),
        bytes(RefreshRequest(7)),
        bytes(ReceiverReport(1, 2, 3, 4, 5, 6)),
    ]


def _valid(tap: SenderTap, channel: str, rng: random.Random) -> bytes:
    """A recent real message of `channel` (control: or a well-formed receiver's one)."""
    if channel == "control":
        return rng.choice([*tap.real["control"], *_receiver_controls()])
    return rng.choice(tap.real[channel])


Family = Callable[[SenderTap, str, random.Random], Message]

FAMILIES: dict[str, Family] = {
    "text": lambda tap, channel, rng: rng.choice(["", "hello", "\x00" * 100, "{}", "\u00e9" * 9]),
    "oversize": lambda tap, channel, rng: rng.randbytes(
        MAX_MESSAGE_BYTES + rng.choice([1, rng.randint(2, 8000)])
    ),
    "random": lambda tap, channel, rng: rng.randbytes(rng.choice([0, 1, rng.randint(2, 300)])),
    "truncated": lambda tap, channel, rng: truncate(_valid(tap, channel, rng), rng),
    "bit_flipped": lambda tap, channel, rng: flip_bits(_valid(tap, channel, rng), rng),
    "damaged": lambda tap, channel, rng: mutate_message(_valid(tap, channel, rng), rng),
}


def _wrong_channel(
    tap: SenderTap, oracle: Oracle, header: StreamHeader, rng: random.Random
) -> Iterator[tuple[str, bytes]]:
    """Messages of the other channels' kinds, control messages of unknown kinds and stream
    headers with garbage; the oracle learns which must count as wrong_channel."""
    keyframe_packet = b"".join(KeyframeFragment.parse(m).data for m in tap.first_keyframe)
    assert len(keyframe_packet) <= MAX_MESSAGE_BYTES
    oracle.wrong_kind["keypoints", keyframe_packet] = 1
    header_message = bytes(StreamHeaderMessage(header))
    for index in range(CASES_PER_CHANNEL):
        bundle = rng.choice(tap.real["keypoints"])
        oracle.wrong_kind["keyframe", bundle] = tap.packets_in[bundle]  # once reassembled
        fragment = rng.choice(tap.first_keyframe)
        yield "keypoints", keyframe_packet
        yield "keypoints", fragment
        yield "keypoints", _valid(tap, "control", rng)
        yield "keyframe", bytes(KeyframeFragment(CRAFTED_ID_BASE + index, 0, 1, bundle))
        yield "keyframe", bundle
        yield "keyframe", header_message
        yield "control", bundle
        yield "control", fragment
        unknown = rng.choice([0, *range(max(ControlKind) + 1, 256)])
        yield "control", bytes([unknown]) + rng.randbytes(rng.randint(0, 20))
        yield "control", header_message[:1] + rng.randbytes(rng.randint(0, 40))
        yield "control", header_message + rng.randbytes(rng.randint(1, 8))


def _jumped_ahead(tap: SenderTap) -> bytes:
    """The newest real predicted keypoint packet with its seq moved JUMP_PACKETS ahead (one
    damaged field): written as the sender's writer would, it carries no time, and the time
    implied by its seq moves on with it."""
    packet = tap.last_predicted
    assert packet is not None
    seq = (packet.seq + JUMP_PACKETS) % COMPACT_SEQ_MODULO
    writer = PacketWriter(tap.header)
    writer.clock = tap.writer.clock.copy()
    pts_ms = writer.clock.implied_pts_ms(PacketKind.KEYPOINTS, seq)
    assert pts_ms is not None
    message = writer.pack(replace(packet, seq=seq, pts_ms=pts_ms, flags=PacketFlags(0)))
    assert not compact_timed(message[0])
    return message


def _never_complete(index: int, rng: random.Random, data_bytes: int = 64) -> bytes:
    """One fragment, of its own keyframe id, of a keyframe whose other fragments never come."""
    count = rng.randint(2, 0xFFFF)
    data = rng.randbytes(rng.randint(1, data_bytes))
    return bytes(
        KeyframeFragment(NEVER_COMPLETE_ID_BASE + index, rng.randrange(count), count, data)
    )


def _burst(tap: SenderTap, rng: random.Random) -> list[tuple[str, Message]]:
    """MEMORY_BURST messages of every damaging family; one in seven a large fragment of a
    keyframe that never completes (what a reassembler that kept them would hold on to)."""
    messages: list[tuple[str, Message]] = []
    largest = MAX_MESSAGE_BYTES - FRAGMENT_HEADER_BYTES
    for index in range(MEMORY_BURST):
        if index % 7 == 0:
            messages.append(("keyframe", _never_complete(NEVER_COMPLETE + index, rng, largest)))
            continue
        channel = rng.choice(CHANNEL_LABELS)
        family = rng.choice(["oversize", "random", "truncated", "bit_flipped", "damaged"])
        messages.append((channel, FAMILIES[family](tap, channel, rng)))
    return messages


# -- the fuzzed call ----------------------------------------------------------------------


@dataclass
class Phase:
    """One family's injection: messages per channel, the counters it moved, and meanwhile:
    frames shown, keypoint frames decoded, the real keypoint frames (distinct packets) and the
    injected keypoint messages that arrived."""

    sent: Counter[str] = field(default_factory=Counter)
    moved: Counter[str] = field(default_factory=Counter)
    frames_shown: int = 0
    frames_decoded: int = 0
    real_frames_arrived: int = 0
    keypoints_arrived: int = 0


@dataclass
class FuzzRecord:
    """What the fuzzed call did, for the tests to judge."""

    phases: dict[str, Phase]
    oracle: Oracle
    sent: Counter[str]  # per channel, real and injected
    summary: dict  # the receiver's, at the end of the call
    most_pending_fragments: int
    keyframes_after_garbage: int
    frames_after: int
    decoded_after: int
    real_frames_after: int  # the sender's keypoint frames that arrived meanwhile
    traced_growth_bytes: int
    burst_bytes: int
    jump_freeze_s: float
    jump_late_packets: int
    jump_keyframe_requests: int
    handler_errors: list[str]
    loop_errors: list[str]


def _shown(receiver: CallReceiver) -> int:
    return len(receiver.stats.displayed_pts_ms)


def _pending_fragments(receiver: CallReceiver) -> int:
    return receiver.summary()["keyframe_fragments"]["in_progress"]  # type: ignore[index]


def _decoded_frames(receiver: CallReceiver) -> int:
    assert receiver.decoder is not None
    return receiver.decoder.stats.keypoint_frames


def _counters(receiver: CallReceiver) -> Counter[str]:
    """The receiver's counts of what it threw away (and lost), in one name space."""
    counts = Counter(receiver.stats.dropped)
    decoder = receiver.decoder
    assert decoder is not None
    for name in (*DECODER_DROPS, "lost", "undecodable"):
        counts[name] = getattr(decoder.stats, name)
    fragments = receiver.summary()["keyframe_fragments"]
    counts["fragment_duplicates"] = fragments["duplicates"]  # type: ignore[index]
    counts["fragments_abandoned"] = fragments["abandoned"]  # type: ignore[index]
    return counts


async def _longest_freeze(receiver: CallReceiver, watch_s: float) -> float:
    """The longest time without a new frame shown, watched until frames have flowed again
    for FREEZE_RESUMED_FRAMES after a freeze of FREEZE_S or more, or for watch_s."""
    loop = asyncio.get_running_loop()
    started = last_change = loop.time()
    shown, longest, resumed_at = _shown(receiver), 0.0, None
    while loop.time() - started < watch_s:
        await asyncio.sleep(0.02)
        if _shown(receiver) == shown:
            continue
        shown, now = _shown(receiver), loop.time()
        longest, last_change = max(longest, now - last_change), now
        if resumed_at is None and longest >= FREEZE_S:
            resumed_at = shown
        if resumed_at is not None and shown - resumed_at >= FREEZE_RESUMED_FRAMES:
            break
    return max(longest, loop.time() - last_change)


async def _decoded(receiver: CallReceiver) -> None:
    """Until the receiver's worker has decoded every message queued so far (its queue and its
    one worker thread are its own: a test's look inside)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_S
    while True:
        await loop.run_in_executor(receiver._executor, lambda: None)  # after the batch in hand
        if not receiver._pending:
            return
        if loop.time() > deadline:
            raise AssertionError("the receiver never caught up with its messages")
        await asyncio.sleep(0.02)


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Fuzzer:
    """The injections, phase by phase, against a call that is running."""

    def __init__(self, encoder: StreamEncoder, source: ArraySource) -> None:
        self.encoder = encoder
        self.source = source
        self.rng = random.Random(SEED)
        self.oracle = Oracle()
        self.tap: SenderTap | None = None
        self.receiver: CallReceiver | None = None
        self.phases: dict[str, Phase] = {}
        self.most_pending = 0
        self.keyframes_before = 0
        self.handler_errors: list[str] = []

    def capture_channels(self, channels: CallChannels) -> CallChannels:
        self.tap = SenderTap(channels, self.encoder.header, self.oracle)
        return channels

    def capture_receiver(self, receiver: CallReceiver) -> list[object]:
        """The call's sinks factory: no sinks, but the receiver, watched."""
        self.receiver = receiver
        self.oracle.listen(receiver.channels)
        for name in CHANNEL_LABELS:
            getattr(receiver.channels, name).on(
                "error", lambda e: self.handler_errors.append(repr(e))
            )
        return []

    async def run(self) -> dict[str, object]:
        await _until(self._rendering, 20, "the first frames")
        tap = self.tap
        assert tap is not None
        record = await self._timeline_jump()
        for name, family in FAMILIES.items():
            messages = [
                (channel, family(tap, channel, self.rng))
                for channel in CHANNEL_LABELS
                for _ in range(CASES_PER_CHANNEL)
            ]
            self.rng.shuffle(messages)
            await self._phase(name, messages)
        header = self.encoder.header
        await self._phase("wrong_channel", list(_wrong_channel(tap, self.oracle, header, self.rng)))
        never = [("keyframe", _never_complete(index, self.rng)) for index in range(NEVER_COMPLETE)]
        await self._phase("never_complete", never)
        await self._keyframe_after_garbage()
        record.update(await self._memory_burst())
        record.update(await self._tail())
        return record

    def _rendering(self) -> bool:
        return self.receiver is not None and _shown(self.receiver) >= 10

    async def _phase(self, name: str, messages: list[tuple[str, Message]]) -> None:
        receiver = self.receiver
        assert receiver is not None
        oracle, before, shown = self.oracle, _counters(receiver), _shown(receiver)
        real, injected = oracle.real_frames_arrived, oracle.injected_keypoints_arrived
        decoded = _decoded_frames(receiver)
        await self._send_all(messages)
        await self._settle()
        moved = _counters(receiver)
        moved.subtract(before)
        self.phases[name] = Phase(
            Counter(channel for channel, _ in messages),
            +moved,
            _shown(receiver) - shown,
            _decoded_frames(receiver) - decoded,
            oracle.real_frames_arrived - real,
            oracle.injected_keypoints_arrived - injected,
        )

    async def _send_all(self, messages: list[tuple[str, Message]]) -> None:
        """Send in small groups, so frames keep flowing between them."""
        assert self.tap is not None and self.receiver is not None
        for start in range(0, len(messages), 24):
            for channel, message in messages[start : start + 24]:
                self.tap.inject(channel, message)
            await asyncio.sleep(0.01)
            self.most_pending = max(self.most_pending, _pending_fragments(self.receiver))

    async def _settle(self) -> None:
        """Until every message sent on the reliable channels arrived (the keypoints channel's,
        sent among them, have arrived or are lost by then) and the receiver decoded them all,
        however busy the machine."""
        tap, receiver = self.tap, self.receiver
        assert tap is not None and receiver is not None

        def delivered() -> bool:
            arrived = self.oracle.arrived
            return all(arrived[name] == tap.sent[name] for name in ("keyframe", "control"))

        await _until(delivered, SETTLE_TIMEOUT_S, "the reliable channels to deliver")
        await asyncio.sleep(SETTLE_S)
        await _decoded(receiver)

    async def _keyframe_after_garbage(self) -> None:
        """The sender's next keyframe must still reassemble among the abandoned ones."""
        decoder = self.receiver.decoder if self.receiver else None
        assert decoder is not None
        self.keyframes_before = decoder.stats.keyframes
        self.encoder.request_keyframe("fuzz")
        await _until(lambda: decoder.stats.keyframes > self.keyframes_before, 10, "a keyframe")

    async def _memory_burst(self) -> dict[str, int]:
        assert self.tap is not None
        burst = _burst(self.tap, self.rng)
        gc.collect()
        start_bytes = tracemalloc.get_traced_memory()[0]
        await self._send_all(burst)
        await self._settle()
        gc.collect()
        return {
            "traced_growth_bytes": tracemalloc.get_traced_memory()[0] - start_bytes,
            "burst_bytes": sum(len(message) for _, message in burst),
        }

    async def _timeline_jump(self) -> dict[str, float]:
        """One keypoint message moved far ahead: the longest the picture then froze."""
        receiver, tap = self.receiver, self.tap
        assert receiver is not None and receiver.decoder is not None and tap is not None
        late, requests = receiver.decoder.stats.late, receiver.stats.keyframe_requests
        arrived = self.oracle.injected_keypoints_arrived
        for _ in range(3):  # the keypoints channel may lose it
            tap.inject("keypoints", _jumped_ahead(tap))
            with contextlib.suppress(AssertionError):
                await _until(lambda: self.oracle.injected_keypoints_arrived > arrived, 1, "")
                break
        return {
            "jump_freeze_s": await _longest_freeze(receiver, JUMP_WATCH_S),
            "jump_late_packets": receiver.decoder.stats.late - late,
            "jump_keyframe_requests": receiver.stats.keyframe_requests - requests,
        }

    async def _tail(self) -> dict[str, int]:
        """Clean frames only, then the end of the call."""
        receiver, tap = self.receiver, self.tap
        assert receiver is not None and receiver.decoder is not None and tap is not None
        shown, arrived = _shown(receiver), self.oracle.real_frames_arrived
        decoded = _decoded_frames(receiver)
        await asyncio.sleep(TAIL_S)
        arrived = self.oracle.real_frames_arrived - arrived
        await _decoded(receiver)
        record = {
            "frames_after": _shown(receiver) - shown,
            "decoded_after": _decoded_frames(receiver) - decoded,
            "real_frames_after": arrived,
            "keyframes_after_garbage": receiver.decoder.stats.keyframes - self.keyframes_before,
        }
        await asyncio.to_thread(self.source.stop)
        return record


async def _fuzzed_call(fuzzer: Fuzzer, encoder: StreamEncoder) -> tuple[dict, dict, list[str]]:
    loop_errors: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: loop_errors.append(str(context)))
    calling = asyncio.create_task(
        call.loopback_call(
            encoder,
            fuzzer.source,
            SenderConfig(fragment_bytes=FRAGMENT_BYTES),
            ReceiverConfig(decoder=MESH_WARP, max_message_bytes=MAX_MESSAGE_BYTES),
            sinks=fuzzer.capture_receiver,  # type: ignore[arg-type]
        )
    )
    try:
        fuzzing = await fuzzer.run()
    finally:
        await asyncio.to_thread(fuzzer.source.stop)  # the call ends when its source does
        results = await calling
    return results, fuzzing, loop_errors


@pytest.fixture(scope="module")
def record() -> FuzzRecord:
    encoder = replay_encoder()
    source = ArraySource([GRADIENT], FPS, loop=True, max_duration_s=CALL_LIMIT_S)
    fuzzer = Fuzzer(encoder, source)
    make_channels = call.create_channels
    # Traced from the start, so what the call frees (a replaced reference) nets out.
    tracemalloc.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                call, "create_channels", lambda pc: fuzzer.capture_channels(make_channels(pc))
            )
            results, fuzzing, loop_errors = asyncio.run(
                asyncio.wait_for(_fuzzed_call(fuzzer, encoder), CALL_LIMIT_S + 30)
            )
    finally:
        tracemalloc.stop()
    assert fuzzer.tap is not None
    return FuzzRecord(
        phases=fuzzer.phases,
        oracle=fuzzer.oracle,
        sent=fuzzer.tap.sent,
        summary=results["receiver"],
        most_pending_fragments=fuzzer.most_pending,
        handler_errors=fuzzer.handler_errors,
        loop_errors=loop_errors,
        **fuzzing,
    )


# -- the promises -------------------------------------------------------------------------


def test_nothing_raises_and_every_message_arrives(record: FuzzRecord) -> None:
    assert record.handler_errors == [] and record.loop_errors == []
    assert set(record.phases) == {*FAMILIES, "wrong_channel", "never_complete"}
    # The reliable channels deliver everything; the keypoints channel (no retransmissions)
    # may lose the odd message in a burst, even on loopback.
    for channel in ("keyframe", "control"):
        assert record.oracle.arrived[channel] == record.sent[channel]
    assert record.oracle.arrived["keypoints"] >= 0.97 * record.sent["keypoints"]


def test_every_dropped_message_is_counted_under_its_reason(record: FuzzRecord) -> None:
    """Text, oversized, bad fragments and bad or unexpected control messages: exactly the
    counts the library's own parsers give for what arrived."""
    dropped = record.summary["dropped_messages"]
    assert dropped == dict(record.oracle.drops)
    reasons = {"text_message", "oversize", "bad_fragment", "bad_control", "unexpected_control"}
    assert set(dropped) == reasons
    # Nothing else is counted as garbage then; the reliable channels' share of each phase
    # arrives whole, the keypoints channel's may lose a few.
    for family, reason in (("text", "text_message"), ("oversize", "oversize")):
        moved = record.phases[family].moved
        assert {name for name in moved if name in GARBAGE_COUNTS} == {reason}
        assert 2 * CASES_PER_CHANNEL <= moved[reason] <= 3 * CASES_PER_CHANNEL


def test_damaged_keypoint_messages_are_counted_by_the_decoder(record: FuzzRecord) -> None:
    """Whether a damaged keypoint message is late, implausible, corrupt or of an unknown kind
    depends on the timeline when it lands; most of each family that arrived is counted."""
    for family in ("random", "truncated", "bit_flipped", "damaged"):
        phase = record.phases[family]
        counted = sum(phase.moved[name] for name in DECODER_DROPS)
        assert counted >= phase.keypoints_arrived // 3, family
    decoder = record.summary["decoder"]
    assert record.oracle.wrong_channel >= CASES_PER_CHANNEL
    assert decoder["wrong_channel_packets"] >= record.oracle.wrong_channel
    assert decoder["corrupt_packets"] > 0 and decoder["unknown_kind_packets"] > 0
    assert decoder["implausible_packets"] > 0 and decoder["late_packets"] > 0


def test_keyframe_fragments_that_never_complete_stay_bounded(record: FuzzRecord) -> None:
    limit = Reassembler().max_pending
    assert record.most_pending_fragments <= limit
    assert record.summary["keyframe_fragments"] == record.oracle.fragments()
    assert record.phases["never_complete"].moved["fragments_abandoned"] >= NEVER_COMPLETE - limit
    # ... and the sender's next keyframe still came through whole.
    assert record.keyframes_after_garbage >= 1


def test_the_call_goes_on_rendering(record: FuzzRecord) -> None:
    """Frames are decoded from the real packets that arrive, and shown (a renderer short of
    time shows only the newest of those due: frames shown may be fewer)."""
    # Messages dropped before the decoder leave the picture alone: every frame that arrives is
    # decoded, but for those that wait for a refresh after a frame the keypoints channel lost
    # (no retransmissions: a burst of megabytes on loopback can lose the odd message).
    for family in ("text", "oversize"):
        phase = record.phases[family]
        waited = phase.moved["undecodable"]
        assert phase.frames_decoded + waited >= phase.real_frames_arrived - 2, family
        assert phase.frames_decoded >= DECODED_PER_FRAME * phase.real_frames_arrived - 2, family
        assert phase.frames_shown > 0 or phase.frames_decoded == 0, family
    # After all the garbage, a clean stretch decodes the frames that arrive: damaged packets
    # that moved the timeline ahead were undone by fresh starts the receiver asked for. (The
    # sender's rate adaptation may have slowed it down: it hears of the losses the damaged
    # sequence numbers faked.)
    assert record.real_frames_after > 0 and record.frames_after > 0
    assert record.decoded_after >= DECODED_PER_FRAME * record.real_frames_after - 2


def test_a_timeline_moved_ahead_is_reset_by_a_fresh_start(record: FuzzRecord) -> None:
    """One damaged keypoint message took the timeline 8 s ahead, so the real packets came
    late; the receiver asked for a keyframe, whose fresh start resets the timeline."""
    assert FREEZE_S <= record.jump_freeze_s < RECOVERY_BOUND_S
    assert record.jump_late_packets > 0 and record.jump_keyframe_requests >= 1


def test_memory_stays_bounded_through_a_burst_of_garbage(record: FuzzRecord) -> None:
    assert record.burst_bytes > 3 * MEMORY_GROWTH_BOUND_BYTES
    assert record.traced_growth_bytes < MEMORY_GROWTH_BOUND_BYTES
    assert record.summary["keyframe_fragments"]["in_progress"] <= Reassembler().max_pending
