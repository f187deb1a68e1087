"""Which keypoint packets share a data-channel message: the one bundling rule of the live sender,
of `talkcodec info`'s wire model and of the benchmarks.

Every data-channel message costs ~85 bytes of SCTP/DTLS/UDP/IPv4 headers
(talkcodec/transport/overhead.py), several times a frame's keypoints, so a sender may let a
frame's packet wait for the next frames' and send them together (PacketWriter.pack_bundle). A
bundle holds the packets of the frames captured within `bundle_ms` of its first (half a frame
period of slack for capture jitter), at most 1 + bundle_ms / frame period of them: it is sent
as soon as the next frame could no longer join it, so its first frame waits about bundle_ms
(the latency bundling costs; a live sender also sends what waits once `max_wait_ms` passed
without the next frame), and a bundle_ms of 0 sends every packet on its own.
"""

from __future__ import annotations

from talkcodec.bitstream import (
    MAX_BUNDLE_PACKETS,
    PTS_MODULO,
    Packet,
    PacketFormat,
    PacketKind,
    PacketWriter,
    StreamHeader,
)
from talkcodec.transport.fragmentation import DEFAULT_FRAGMENT_BYTES, fragment
from talkcodec.transport.overhead import WireCost, datachannel_stream_cost


class Bundler:
    """Keypoint packets in (in sending order), bundles out."""

    def __init__(self, fps: float, bundle_ms: float) -> None:
        if not fps > 0 or bundle_ms < 0:
            raise ValueError(f"need fps > 0 and bundle_ms >= 0, got {fps} and {bundle_ms}")
        self.frame_ms = 1000 / fps
        self.bundle_ms = bundle_ms
        self.max_frames = min(MAX_BUNDLE_PACKETS, 1 + int(bundle_ms / self.frame_ms + 1e-9))
        # The next frame is encoded a little after its capture time: wait that much longer.
        self.max_wait_ms = bundle_ms + self.frame_ms / 2
        self._waiting: list[Packet] = []

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def add(self, packet: Packet) -> list[list[Packet]]:
        """Add the next packet; returns the bundles to send now (none while it may grow)."""
        ready = []
        if self._waiting:
            waited_ms = (packet.pts_ms - self._waiting[0].pts_ms) % PTS_MODULO
            if waited_ms > self.bundle_ms + self.frame_ms / 2:  # after a gap (no face, a stall)
                ready.append(self.flush())
        self._waiting.append(packet)
        if len(self._waiting) >= self.max_frames:
            ready.append(self.flush())
        return ready

    def flush(self) -> list[Packet]:
        """What waits, as one bundle (empty when nothing does)."""
        bundle, self._waiting = self._waiting, []
        return bundle


def bundle_stream(packets: list[Packet], fps: float, bundle_ms: float) -> list[list[Packet]]:
    """A stream's keypoint packets (in sending order) grouped as a sender with no stalls would
    send them: the wire model of `talkcodec info` and the benchmarks."""
    bundler = Bundler(fps, bundle_ms)
    bundles = [bundle for packet in packets for bundle in bundler.add(packet)]
    last = bundler.flush()
    return [*bundles, last] if last else bundles


def stream_wire_cost(
    header: StreamHeader,
    packets: list[Packet],
    bundle_ms: float,
    fragment_bytes: int = DEFAULT_FRAGMENT_BYTES,
) -> dict[str, WireCost]:
    """What a stream's packets (in sending order) cost on the wire in a live call, by packet
    kind ("keyframe", "keypoints"): each KEYFRAME packet one message per fragment, KEYPOINTS
    packets bundled within bundle_ms where the packet format allows (one message each in FIXED
    streams), every message with its modelled SCTP/DTLS/UDP/IPv4 headers. payload_bytes of
    each WireCost are the messages' bytes (packet headers included)."""
    if header.packet_format is not PacketFormat.COMPACT:
        bundle_ms = 0.0
    writer = PacketWriter(header)
    costs: dict[str, WireCost] = {}
    keypoints = []
    for packet in packets:
        if packet.kind is PacketKind.KEYPOINTS:
            keypoints.append(packet)
            continue
        message = writer.pack(packet)
        parts = fragment(message, 0, fragment_bytes)
        cost = datachannel_stream_cost(len(bytes(part)) for part in parts)
        name = packet.kind.name.lower()
        costs[name] = costs.get(name, WireCost(0, 0, 0)) + cost
    if keypoints:
        bundles = bundle_stream(keypoints, header.fps, bundle_ms)
        sizes = [len(writer.pack_bundle(bundle)) for bundle in bundles]
        costs["keypoints"] = datachannel_stream_cost(sizes)
    return costs
