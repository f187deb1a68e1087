"""The call's WebRTC peer connection and its three data channels.

`keyframe`: ordered, reliable; each message one KeyframeFragment.
`keypoints`: unordered, no retransmissions (maxRetransmits=0); each message one KEYPOINTS packet.
`control`: ordered, reliable; control messages both ways (talkcodec/transport/control.py).

The sender creates the channels and makes the offer; the receiver answers and picks the channels
up as they open. ICE servers are none by default, so a LAN or loopback call needs nothing
outside; DTLS is always on (aiortc cannot turn it off).

Both peers offer ECDHE-ECDSA-CHACHA20-POLY1305 first (prefer_chacha20): in DTLS 1.2 its nonce
comes from the record's sequence number (RFC 7905), while AES-GCM, aiortc's first choice, sends
an 8-byte explicit nonce in every record (RFC 5288). Every data-channel message is one record,
so that is 8 bytes less per message, on a keypoint message of ~100 bytes on the wire. The
overhead model (talkcodec/transport/overhead.py) counts the ChaCha20 record; a peer that does
not offer it (a browser that prefers AES-GCM as server) costs those 8 bytes again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection
from aiortc.contrib.signaling import BYE, BaseSignaling
from aiortc.rtcsessiondescription import RTCSessionDescription

logger = logging.getLogger(__name__)

KEYFRAME_CHANNEL = "keyframe"
KEYPOINTS_CHANNEL = "keypoints"
CONTROL_CHANNEL = "control"
CHANNEL_LABELS = (KEYFRAME_CHANNEL, KEYPOINTS_CHANNEL, CONTROL_CHANNEL)


class SignalingError(RuntimeError):
    """The other side did not complete the offer/answer exchange."""


@dataclass(frozen=True)
class CallChannels:
    keyframe: RTCDataChannel
    keypoints: RTCDataChannel
    control: RTCDataChannel


def parse_ice_server(spec: str) -> RTCIceServer:
    """An ICE server from `URL` or `URL,USERNAME,CREDENTIAL` (for TURN)."""
    url, *auth = spec.split(",")
    if len(auth) not in (0, 2) or not url:
        raise ValueError(f"ICE server must be URL or URL,USERNAME,CREDENTIAL, got {spec!r}")
    if auth:
        return RTCIceServer(urls=url, username=auth[0], credential=auth[1])
    return RTCIceServer(urls=url)


PREFERRED_DTLS_CIPHER = "ECDHE-ECDSA-CHACHA20-POLY1305"


def prefer_chacha20() -> None:
    """Put PREFERRED_DTLS_CIPHER first in the cipher list of every DTLS transport aiortc makes
    from now on (module doc); the rest of aiortc's list stays, in its order. Idempotent."""
    from aiortc.rtcdtlstransport import RTCCertificate

    original = RTCCertificate._create_ssl_context
    if getattr(original, "prefers_chacha20", False):
        return

    def create_ssl_context(self, srtp_profiles):  # type: ignore[no-untyped-def]
        context = original(self, srtp_profiles)
        context.set_cipher_list(
            f"{PREFERRED_DTLS_CIPHER}:ECDHE-ECDSA-AES128-GCM-SHA256:"
            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA".encode()
        )
        return context

    create_ssl_context.prefers_chacha20 = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create_ssl_context  # type: ignore[method-assign]


def negotiated_cipher(pc: RTCPeerConnection) -> str | None:
    """The DTLS cipher suite of the connection's data channels (None before the handshake)."""
    sctp = pc.sctp
    ssl = getattr(sctp.transport, "_ssl", None) if sctp is not None else None
    if ssl is None:
        return None
    name = ssl.get_cipher_name()
    return None if name is None else str(name)


def make_peer_connection(ice_servers: Sequence[str] = ()) -> RTCPeerConnection:
    """A peer connection using only the given ICE servers (none: host candidates only), whose
    DTLS offers ChaCha20-Poly1305 first (prefer_chacha20)."""
    prefer_chacha20()
    servers = [parse_ice_server(spec) for spec in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


def create_channels(pc: RTCPeerConnection) -> CallChannels:
    """The sender's side: create the three channels (before the offer)."""
    return CallChannels(
        keyframe=pc.createDataChannel(KEYFRAME_CHANNEL, ordered=True),
        keypoints=pc.createDataChannel(KEYPOINTS_CHANNEL, ordered=False, maxRetransmits=0),
        control=pc.createDataChannel(CONTROL_CHANNEL, ordered=True),
    )


class ChannelCollector:
    """The receiver's side: collects the sender's channels as they arrive."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._channels: dict[str, RTCDataChannel] = {}
        self._complete = asyncio.Event()
        pc.on("datachannel", self._on_channel)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if channel.label not in CHANNEL_LABELS or channel.label in self._channels:
            logger.warning("ignoring unexpected data channel %r", channel.label)
            return
        self._channels[channel.label] = channel
        if len(self._channels) == len(CHANNEL_LABELS):
            self._complete.set()

    async def wait(self, timeout_s: float) -> CallChannels:
        try:
            await asyncio.wait_for(self._complete.wait(), timeout_s)
        except TimeoutError:
            missing = sorted(set(CHANNEL_LABELS) - set(self._channels))
            raise SignalingError(
                f"data channels {', '.join(missing)} did not open within {timeout_s:g} s"
            ) from None
        return CallChannels(
            keyframe=self._channels[KEYFRAME_CHANNEL],
            keypoints=self._channels[KEYPOINTS_CHANNEL],
            control=self._channels[CONTROL_CHANNEL],
        )


async def wait_open(channels: CallChannels, timeout_s: float) -> None:
    """Until all three channels are open (the sender's channels start 'connecting')."""

    async def one(channel: RTCDataChannel) -> None:
        if channel.readyState == "open":
            return
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await opened.wait()

    try:
        await asyncio.wait_for(
            asyncio.gather(one(channels.keyframe), one(channels.keypoints), one(channels.control)),
            timeout_s,
        )
    except TimeoutError:
        raise SignalingError(f"data channels did not open within {timeout_s:g} s") from None


async def offer(pc: RTCPeerConnection, signaling: BaseSignaling) -> None:
    """The sender's half of the exchange: send an offer, apply the answer."""
    await signaling.connect()
    await pc.setLocalDescription(await pc.createOffer())
    await signaling.send(pc.localDescription)
    while True:
        message = await signaling.receive()
        if isinstance(message, RTCSessionDescription) and message.type == "answer":
            await pc.setRemoteDescription(message)
            return
        if message is None or message is BYE:
            raise SignalingError("the receiver left before answering")
        logger.debug("ignoring signaling message %r", message)


async def _receive_retrying(signaling: BaseSignaling, timeout_s: float) -> object:
    """The next signaling message; keeps trying while the other side is not listening yet."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await signaling.receive()
        except OSError as error:
            if asyncio.get_running_loop().time() >= deadline:
                raise SignalingError(f"cannot reach the signaling peer: {error}") from None
            await asyncio.sleep(0.5)


async def answer(pc: RTCPeerConnection, signaling: BaseSignaling, timeout_s: float = 60) -> None:
    """The receiver's half: wait for the offer, send the answer."""
    await signaling.connect()
    while True:
        message = await _receive_retrying(signaling, timeout_s)
        if isinstance(message, RTCSessionDescription) and message.type == "offer":
            await pc.setRemoteDescription(message)
            await pc.setLocalDescription(await pc.createAnswer())
            await signaling.send(pc.localDescription)
            return
        if message is None or message is BYE:
            raise SignalingError("the sender left before offering")
        logger.debug("ignoring signaling message %r", message)


async def connect_in_process(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
    """Offer/answer between two peer connections of this process (loopback calls, tests)."""
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
