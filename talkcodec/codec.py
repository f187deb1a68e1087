"""The codec proper, free of files and sockets: frames in, packets out, and back.

StreamEncoder turns camera frames into packets: a KEYFRAME packet (the crop coded with the
keyframe codec, plus its own intra-coded keypoints so it stands alone) when the stream starts or
the crop moved, then one KEYPOINTS packet per frame, and further KEYFRAME packets for the
receiver's reference bank when the face looks unlike every reference it holds. StreamDecoder
turns packets back into frames with a renderer. Each packet kind has its own sequence counter,
so the receiver can tell a lost keypoint packet from a late one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from talkcodec.bank import BankMirror, describe
from talkcodec.bitstream import (
    MAX_KEYPOINT_PAYLOAD_BYTES,
    MAX_PTS_JUMP_MS,
    MAX_PTS_STEP_MS,
    PTS_MODULO,
    Arrival,
    BitstreamError,
    HybridKeypoints,
    ImplausiblePacket,
    ImpliedClock,
    KeyframePayload,
    KeypointTimeline,
    LowresCodecId,
    LowresPicture,
    Packet,
    PacketFlags,
    PacketFormat,
    PacketKind,
    PacketReader,
    StreamHeader,
    signed_difference,
    tkc_record_bytes,
)
from talkcodec.config import PACKET_FORMATS, DecoderConfig, EncoderConfig
from talkcodec.entropy.keypoints import KeypointDecoder, KeypointEncoder
from talkcodec.generator import Renderer, make_renderer
from talkcodec.generator.backends.base import RefinerBackend
from talkcodec.generator.fusion import FusionConfig, fuse, fusion_level_for
from talkcodec.generator.learned_fusion import LearnedFusion
from talkcodec.keyframe import KeyframeCodec, keyframe_codec_for_wire_id, make_keyframe_codec
from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.frontend import FaceFrontend
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import KeypointModel
from talkcodec.keypoints.registry import keypoint_model_id, load_keypoint_model
from talkcodec.lowres.codec import LowresDecoder, LowresEncoder
from talkcodec.ratecontrol import (
    MESSAGE_OVERHEAD_BYTES,
    RateCap,
    frames_per_message,
    header_kbps,
    keyframe_image_allowance,
    keyframe_wire_bytes,
)
from talkcodec.transport.overhead import SCTP_PACKET_OVERHEAD_BYTES

logger = logging.getLogger(__name__)

# The longest run of frames the rate cap may leave unsent, below MAX_PTS_JUMP_MS.
MAX_SKIP_MS = MAX_PTS_JUMP_MS - 100
# Under a live target (set_target_kbps) a hybrid stream's low-res pictures get the target less
# this (keypoints about 0.9 kbit/s, the hybrid byte of each packet, keyframes, and x264's
# overshoot at these rates), and never less than the minimum.
LOWRES_RESERVE_KBPS = 2.0
MIN_LOWRES_KBPS = 2.0
# Below this payload target the sender sends no low-res pictures (keypoints only, the render
# alone on the receiver) until the target is back. Pictures squeezed near x264's floor made the
# rate cap skip keypoint frames to fit them, and each rate change (x264 is reopened, so the
# next picture is an IDR of ~600 bytes) refilled a congested queue: in the adaptation
# benchmark's step from 64 to 8 kbit/s on the wire (about 4-5 kbit/s of payload left), pausing
# below 3.5 showed 291 frames in the 26 s after the step and below 5.0 258, against 610 for the
# keypoint-only stream (benchmarks/results/adaptation*.md).
LOWRES_PAUSE_BELOW_KBPS = 6.0
# The receiver fuses the last picture with frames up to this many frame times after it (more
# than the slowest cadence, lowres_every_frames <= 8); a later frame shows the render alone, so
# a sender that paused its pictures never leaves a stale one on screen.
MAX_PICTURE_AGE_FRAMES = 12


def _keypoint_model(model_id: int, expression_dims: int) -> KeypointModel:
    model = load_keypoint_model(model_id)
    if expression_dims > model.expression_dims:
        raise BitstreamError(
            f"stream codes {expression_dims} expression dims, model has {model.expression_dims}"
        )
    return model.truncated(expression_dims)


@dataclass(frozen=True)
class SentKeypoints:
    """What the sender codes for one frame's landmarks and what the receiver decodes from it.

    indices: (P,) int32 quantiser indices of the fitted keypoint-model parameters, what the
    keypoint packet codes. decoded: the landmarks the receiver reconstructs from them.
    """

    indices: np.ndarray
    decoded: Landmarks


class StreamEncoder:
    """The sender's codec: one instance per stream, frames in capture order.

    It mirrors the receiver's reference bank (talkcodec.bank) from the decoded
    landmarks of the references it sent, so it knows which reference each frame is rendered
    from (`selected_reference_id`) and when the current face is far from all of them.

    `detector` finds the landmarks of each frame; by default the one `config.detector` names
    (closed with the encoder). A talkcodec.keypoints.replay.ReplayDetector runs the same path
    on landmarks given in advance (the encoder's replay mode: tests, benchmarks, training data).
    `keyframe_codec` codes the keyframes; by default the one `config.keyframe_codec` names.
    """

    def __init__(
        self,
        config: EncoderConfig,
        detector: LandmarkDetector | None = None,
        keyframe_codec: KeyframeCodec | None = None,
    ) -> None:
        self.config = config
        self.keyframe_codec = keyframe_codec or make_keyframe_codec(
            config.keyframe_codec, config.keyframe_quality
        )
        # The extra references' codec (each keyframe packet names its own).
        self.reference_codec = (
            make_keyframe_codec(config.reference_codec, config.reference_quality)
            if config.reference_codec
            else self.keyframe_codec
        )
        model_id = keypoint_model_id(config.detector, config.keypoint_coder)
        self.model = _keypoint_model(model_id, config.expression_dims)
        lowres_px = config.lowres_px
        lowres_fps = config.fps / config.lowres_every_frames
        self.header = StreamHeader(
            width=config.size_px,
            height=config.size_px,
            fps_milli=round(config.fps * 1000),
            keyframe_codec=self.keyframe_codec.wire_id,
            keypoint_model=model_id,
            keypoint_step_millipx=round(config.keypoint_step_px * 1000),
            expression_dims=config.expression_dims,
            reference_bank_size=config.reference_bank_size,
            packet_format=PACKET_FORMATS[config.packet_format],
            lowres_codec=LowresEncoder.codec_id if lowres_px else LowresCodecId.NONE,
            lowres_width=lowres_px,
            lowres_height=lowres_px,
            fusion_level=(
                fusion_level_for(config.lowres_kbps, (lowres_px, lowres_px), lowres_fps)
                if lowres_px
                else 0
            ),
        )
        self._lowres = (
            LowresEncoder((lowres_px, lowres_px), config.lowres_kbps, lowres_fps)
            if lowres_px
            else None
        )
        self._frames_to_next_picture = 0  # keypoint packets until the next low-res picture
        self.lowres_paused = False  # under a target too thin for pictures (set_target_kbps)
        self._picture_face: np.ndarray | None = None  # decoded face points of the last picture
        step_px = self.header.keypoint_step_millipx / 1000
        self._owns_detector = detector is None
        self._detector = detector if detector is not None else make_detector(config.detector)
        self._frontend = FaceFrontend(self._detector, config.size_px, crop=config.crop)
        self._keypoints = KeypointEncoder(
            self.model, step_px, config.refresh_interval_frames, config.keypoint_rdo_lambda_px2
        )
        self._bank = BankMirror(config.reference_bank_size)
        self._reference_budget = ByteBudget(
            config.reference_budget_kbps * 1000 / 8, config.reference_burst_s
        )
        self._keyframe_seq = 0
        self._keypoint_seq = 0
        # The times a PacketWriter of this stream leaves out (COMPACT packets), mirrored so
        # that a keypoint packet whose capture time is within a quarter frame of the implied
        # one takes the implied one and costs no timestamp bytes.
        self._implied = ImpliedClock(self.header.fps_milli)
        # --max-kbps counts .tkc bytes, --max-wire-kbps wire bytes (_cap_bytes).
        cap_kbps = config.max_wire_kbps or config.max_kbps
        self.rate_cap = RateCap(cap_kbps, config.fps) if cap_kbps > 0 else None
        self.wire_bundle_ms = config.wire_bundle_ms
        # The keypoint message the wire cap last counted open (--max-wire-kbps).
        self._bundle_first_pts_ms: int | None = None
        self._bundle_frames = 0
        self._last_keypoint_bytes = 8  # the estimate of the next keypoint packet's size
        self._fit_lowres(None)
        self._last_keyframe_bytes = 0
        self._last_sent_pts_ms: int | None = None  # of the last keypoint packet
        self._frame_index = 0
        self._keyframe_wanted: str | None = "start"
        self._refresh_wanted = False
        self._last_keyframe_pts_ms: int | None = None
        self._last_fresh_start_pts_ms: int | None = None
        self.last_crop: np.ndarray | None = None
        self.last_landmarks: Landmarks | None = None
        # What the receiver renders the last frame from: its decoded landmarks and the slot of
        # the reference bank it picks. None when the last frame had no face.
        self.last_decoded_landmarks: Landmarks | None = None
        self._shown_landmarks: Landmarks | None = None  # of the last frame sent
        self.selected_reference_id: int | None = None
        # Why each keyframe was sent: start, request, interval, crop_moved, face_regained
        # (these start afresh in slot 0), reference (an extra reference in slot 1 or above).
        self.keyframe_reasons: Counter[str] = Counter()

    def request_keyframe(self, reason: str = "request") -> None:
        """Send a keyframe with the next frame that has a face (e.g. the receiver asked)."""
        self._keyframe_wanted = self._keyframe_wanted or reason

    def request_refresh(self) -> None:
        """Intra-code the next keypoint packet, so a receiver that lost one resumes at once."""
        self._refresh_wanted = True

    def set_target_kbps(self, target_kbps: float | None) -> None:
        """Keep the stream under target_kbps from the next frame on, below its --max-kbps (the
        live sender's rate adaptation: RateCap.set_target_kbps). A stream without --max-kbps
        gets a rate cap with no ceiling of its own when first given a target."""
        if target_kbps is not None and self.rate_cap is None:
            self.rate_cap = RateCap(None, self.config.fps)
        if self.rate_cap is not None:
            self.rate_cap.set_target_kbps(target_kbps)
        self._fit_lowres(target_kbps)

    def _fit_lowres(self, target_kbps: float | None) -> None:
        """The low-res stream's rate under the live target and the stream's own cap
        (--max-kbps, --max-wire-kbps less the headers): what the keypoints and keyframes leave,
        within MIN_LOWRES_KBPS .. its configured rate (x264 goes no lower at these sizes
        anyway); no pictures at all below LOWRES_PAUSE_BELOW_KBPS."""
        if self._lowres is None:
            return
        config = self.config
        caps = [kbps for kbps in (target_kbps, config.max_wire_kbps or config.max_kbps) if kbps]
        wanted, self.lowres_paused = config.lowres_kbps, False
        if caps:
            payload_kbps = min(caps)
            if config.max_wire_kbps:
                payload_kbps -= header_kbps(config.fps, self.wire_bundle_ms)
            wanted = min(wanted, max(MIN_LOWRES_KBPS, payload_kbps - LOWRES_RESERVE_KBPS))
            self.lowres_paused = payload_kbps < LOWRES_PAUSE_BELOW_KBPS
        self._lowres.set_kbps(wanted)

    def encode(self, frame: np.ndarray, pts_ms: int) -> list[Packet]:
        """Packets for one camera frame ((H, W, 3) uint8 RGB); none when no face is found.

        After frames without a face the next face brings a keyframe: the receiver's reference
        may no longer match what the camera sees.
        """
        if self.rate_cap is not None:  # re-frame only when the cap can pay for the keyframe
            self._frontend.hold_crop(not self._fits(pts_ms, self._last_keyframe_bytes))
        processed = self._frontend.process(frame)
        self.last_crop = processed.image
        face_was_lost = self.last_landmarks is None and self._last_keyframe_pts_ms is not None
        self.last_landmarks = processed.landmarks
        self.last_decoded_landmarks = self.selected_reference_id = None
        if processed.landmarks is None:
            return []
        sent = self.sent_keypoints(processed.landmarks)
        decoded = sent.decoded
        descriptor = describe(decoded, (self.config.size_px, self.config.size_px))
        reason = self._keyframe_reason(pts_ms, processed.crop_moved, face_was_lost)
        reference_id = 0
        if reason is None and self._reference_due(pts_ms, descriptor):
            reason, reference_id = "reference", self._bank.slot_for_new_reference()
        if reason is None and self._skips(pts_ms):
            # Over the rate cap: this frame is not sent; the receiver shows the last one.
            self.last_decoded_landmarks = self._shown_landmarks
            return []
        # A keyframe's own keypoints are this frame's, intra-coded: the very bytes of the
        # keypoint packet that goes with it, which a keyframe forces to be intra.
        coded = self._keypoints.encode_indices(
            sent.indices, force_intra=reason is not None or self._refresh_wanted
        )
        payload = coded.payload
        if self._lowres is not None:
            fresh = (reason is not None and reference_id == 0) or self._refresh_wanted
            picture = self._picture(self._lowres, processed.image, pts_ms, fresh, decoded.face)
            payload = bytes(HybridKeypoints(coded.payload, picture))
        self._refresh_wanted = False
        packets = []
        if reason is not None:
            self.keyframe_reasons[reason] += 1
            packets.append(
                self._keyframe_packet(processed.image, coded.payload, pts_ms, reference_id)
            )
            if reference_id != 0:
                self._reference_budget.spend(len(packets[-1].payload))
            self._bank.store(reference_id, descriptor, self._frame_index)
        self.last_decoded_landmarks = self._shown_landmarks = decoded
        self.selected_reference_id = self._bank.select(descriptor, self._frame_index)
        self._frame_index += 1
        flags = PacketFlags.INTRA if coded.intra else PacketFlags(0)
        keypoints, timed = self._timed(
            Packet(PacketKind.KEYPOINTS, self._keypoint_seq, pts_ms, payload, flags)
        )
        packets.append(keypoints)
        self._last_sent_pts_ms = pts_ms
        self._keypoint_seq = (self._keypoint_seq + 1) % self.header.seq_modulo
        self._last_keypoint_bytes = self._record_bytes(keypoints, timed)
        if self.rate_cap is not None:
            for packet in packets:
                size = self._cap_bytes(packet, packet.kind is PacketKind.KEYFRAME or timed)
                self.rate_cap.spend(pts_ms, size)
        return packets

    def _moved_since_picture(self, face: np.ndarray) -> bool:
        """Whether the decoded face points moved more than lowres_motion low-res pixels (mean
        2-D displacement) since the last picture's frame."""
        motion, last = self.config.lowres_motion, self._picture_face
        if motion <= 0 or last is None or last.shape != face.shape:
            return False
        scale = self.config.lowres_px / self.config.size_px
        displacement = np.linalg.norm(face[:, :2] - last[:, :2], axis=1).mean() * scale
        return bool(displacement > motion)

    def _picture(
        self,
        lowres: LowresEncoder,
        crop: np.ndarray,
        pts_ms: int,
        fresh: bool,
        face: np.ndarray,
    ) -> LowresPicture | None:
        """This frame's low-res picture, or None between pictures (lowres_every_frames, or
        sooner where the face moved: lowres_motion). A fresh start or a receiver that lost
        packets restarts the low-res stream with an IDR, on this very frame."""
        if fresh:
            lowres.request_idr()
            self._frames_to_next_picture = 0
        if self.lowres_paused:
            return None  # an IDR asked for meanwhile stays due for the first picture after
        if self._frames_to_next_picture > 0 and not self._moved_since_picture(face):
            self._frames_to_next_picture -= 1
            return None
        self._frames_to_next_picture = self.config.lowres_every_frames - 1
        self._picture_face = face
        return lowres.encode(crop, pts_ms)

    def _skips(self, pts_ms: int) -> bool:
        """Whether the rate cap leaves no room for this frame's keypoints. Never for longer
        than MAX_SKIP_MS in a row: a longer gap would look to the receiver's timeline like a
        sender that stalled (MAX_PTS_JUMP_MS), at the cost of the frames up to the next
        intra refresh."""
        cap = self.rate_cap
        if cap is None or self._fits(pts_ms, self._next_keypoint_cost(pts_ms)):
            return False
        if (
            self._last_sent_pts_ms is not None
            and _elapsed_ms(self._last_sent_pts_ms, pts_ms) + cap.frame_ms > MAX_SKIP_MS
        ):
            return False
        cap.skipped_frames += 1
        return True

    def _fits(self, pts_ms: int, size: float) -> bool:
        """Whether `size` more bytes at pts_ms fit the rate cap (always, without one)."""
        return self.rate_cap is None or self.rate_cap.available(pts_ms) >= size

    def _record_bytes(self, packet: Packet, timed: bool) -> int:
        """What `packet` costs in a .tkc record (its time counted when `timed`)."""
        return tkc_record_bytes(self.header.packet_format, len(packet.payload), timed)

    def _cap_bytes(self, packet: Packet, timed: bool) -> int:
        """What `packet` costs under the rate cap: its .tkc record, or with --max-wire-kbps
        its wire bytes (keyframes in fragments; a keypoint packet its bytes in the message,
        plus the message's headers when it opens one, as the sender's Bundler groups them).
        Called once per packet sent, in sending order (it follows the bundling)."""
        record = self._record_bytes(packet, timed)
        if not self.config.max_wire_kbps:
            return record
        if packet.kind is PacketKind.KEYFRAME:
            return keyframe_wire_bytes(record)
        opens = self._opens_message(packet.pts_ms)
        if opens:
            self._bundle_first_pts_ms, self._bundle_frames = packet.pts_ms, 1
        else:
            self._bundle_frames += 1
        return record + (MESSAGE_OVERHEAD_BYTES if opens else 0)

    def _opens_message(self, pts_ms: int) -> bool:
        """Whether a keypoint packet at pts_ms would open a data-channel message (Bundler's
        rule: none waits, the waiting one is full, or it waited too long)."""
        bundle_ms = self.wire_bundle_ms
        if self.header.packet_format is not PacketFormat.COMPACT:
            return True  # FIXED packets travel one per message
        first = self._bundle_first_pts_ms
        frame_ms = 1000 / self.config.fps
        return (
            first is None
            or self._bundle_frames >= frames_per_message(self.config.fps, bundle_ms)
            or _elapsed_ms(first, pts_ms) > bundle_ms + frame_ms / 2
        )

    def _next_keypoint_cost(self, pts_ms: int) -> float:
        """The rate cap's estimate of the next keypoint packet at pts_ms."""
        cost = self._last_keypoint_bytes + 4
        if self.config.max_wire_kbps and self._opens_message(pts_ms):
            cost += MESSAGE_OVERHEAD_BYTES
        return cost

    def _timed(self, packet: Packet) -> tuple[Packet, bool]:
        """`packet` with its capture time snapped to the implied one when that is within a
        quarter frame (COMPACT streams), so jitter of the capture clock costs no bytes; and
        whether a PacketWriter will send its time."""
        if self.header.packet_format is not PacketFormat.COMPACT:
            return packet, True
        implied = self._implied.implied_pts_ms(packet.kind, packet.seq)
        quarter_frame_ms = 250 / self.header.fps
        snaps = implied is not None and not packet.is_intra
        if (
            snaps
            and abs(signed_difference(packet.pts_ms - implied, PTS_MODULO)) <= quarter_frame_ms
        ):
            packet = replace(packet, pts_ms=implied)
        timed = self._implied.needs_time(packet)
        if timed:
            self._implied.note_time(packet.kind, packet.seq, packet.pts_ms)
        return packet, timed

    def coded_keypoints(self, landmarks: Landmarks) -> SentKeypoints:
        """sent_keypoints, then coded as the stream's next frame (the coder's state moves on,
        as for a frame sent): what a receiver decodes for a sequence of frames, without the
        packets (training data)."""
        sent = self.sent_keypoints(landmarks)
        self._keypoints.encode_indices(sent.indices)
        return sent

    def sent_keypoints(self, landmarks: Landmarks) -> SentKeypoints:
        """Fit and quantise one frame's landmarks (in pixels of the size_px crop), once, just
        before the frame is coded: the rate-distortion quantiser weighs each change against
        the last frame coded."""
        indices = self._keypoints.quantise(self.model.fit(landmarks, self.config.size_px))
        values = self._keypoints.quantiser.values(indices)
        return SentKeypoints(indices, self.model.reconstruct(values, self.config.size_px))

    def _keyframe_packet(
        self, image: np.ndarray, intra_keypoints: bytes, pts_ms: int, reference_id: int
    ) -> Packet:
        codec = self.keyframe_codec if reference_id == 0 else self.reference_codec
        if self.rate_cap is None:
            image_bytes = codec.compress(image)
        else:  # what is left for the image once this frame's keypoints are paid for
            allowance = self.rate_cap.available(pts_ms) - 2 * len(intra_keypoints) - 24
            if self.config.max_wire_kbps:  # less the keypoints' message, the fragments' headers
                allowance = keyframe_image_allowance(allowance - 2 * SCTP_PACKET_OVERHEAD_BYTES)
            image_bytes = self.rate_cap.compress_keyframe(codec, image, allowance)
        payload = KeyframePayload(
            codec=codec.wire_id,
            reference_id=reference_id,
            keypoints=intra_keypoints,
            image=image_bytes,
        )
        packet = Packet(
            PacketKind.KEYFRAME, self._keyframe_seq, pts_ms, bytes(payload), PacketFlags.INTRA
        )
        self._keyframe_seq = (self._keyframe_seq + 1) % self.header.seq_modulo
        self._last_keyframe_pts_ms = pts_ms
        self._last_keyframe_bytes = self._cap_bytes(packet, True)
        if reference_id == 0:
            self._keyframe_wanted = None
            self._last_fresh_start_pts_ms = pts_ms
        return packet

    def _keyframe_reason(self, pts_ms: int, crop_moved: bool, face_was_lost: bool) -> str | None:
        """Why this frame needs a fresh start (a keyframe into slot 0), or None."""
        if self._keyframe_wanted:
            return self._keyframe_wanted
        if crop_moved:
            return "crop_moved"
        if face_was_lost:
            return "face_regained"
        interval_ms = self.config.keyframe_interval_s * 1000
        last_ms = self._last_fresh_start_pts_ms
        if interval_ms > 0 and last_ms is not None and _elapsed_ms(last_ms, pts_ms) >= interval_ms:
            return "interval"
        return None

    def _reference_due(self, pts_ms: int, descriptor: np.ndarray) -> bool:
        """Whether this frame should become an extra reference: the bank holds more than slot
        0, the face is far from every reference, and the last keyframe is long enough ago."""
        if self._bank.bank.size == 1 or self._last_keyframe_pts_ms is None:
            return False
        elapsed_ms = _elapsed_ms(self._last_keyframe_pts_ms, pts_ms)
        if elapsed_ms < self.config.min_reference_interval_s * 1000:
            return False
        if not self._reference_budget.available(pts_ms):
            return False
        if not self._fits(pts_ms, 2 * self._last_keyframe_bytes):
            return False  # the rate cap: a reference only with room to spare
        return self._bank.bank.nearest_distance(descriptor) > self.config.reference_threshold_used

    def close(self) -> None:
        if self._owns_detector:
            self._detector.close()


class ByteBudget:
    """A token bucket of bytes: fills at bytes_per_s up to burst_s seconds' worth (full at the
    start); spending may take it below zero, and nothing is available until it refills.
    bytes_per_s = 0 means no limit."""

    def __init__(self, bytes_per_s: float, burst_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.capacity = bytes_per_s * burst_s
        self._tokens = self.capacity
        self._last_pts_ms: int | None = None

    def available(self, pts_ms: int) -> bool:
        """Whether spending is allowed at pts_ms (after refilling up to it)."""
        if self.bytes_per_s <= 0:
            return True
        if self._last_pts_ms is not None:
            refill = _elapsed_ms(self._last_pts_ms, pts_ms) / 1000 * self.bytes_per_s
            self._tokens = min(self.capacity, self._tokens + refill)
        self._last_pts_ms = pts_ms
        return self._tokens > 0

    def spend(self, num_bytes: int) -> None:
        if self.bytes_per_s > 0:
            self._tokens -= num_bytes


def _elapsed_ms(since_pts_ms: int, pts_ms: int) -> int:
    return (pts_ms - since_pts_ms) % PTS_MODULO


@dataclass(frozen=True)
class DecodedFrame:
    """The decoded keypoints of one frame, ready to render: landmarks in stream pixels.

    stream_ms: where the frame lies on the stream's accepted timeline (KeypointTimeline): 0 at
    the first keypoint packet, never more than MAX_PTS_STEP_MS past the previous packet, however
    far its pts_ms jumps. recovered: decoded from a repeated copy (its own message was lost),
    so it arrived a message later than it was due. lowres: the (h, w, 3) uint8 RGB low-res
    picture of the frame (hybrid streams, while the low-res decoder is in step), or None;
    picture: the number of that picture in the stream (stats.lowres_pictures once it was
    decoded); it is the frame's own when picture_fresh, else the last one before it.
    """

    landmarks: Landmarks
    pts_ms: int
    seq: int
    stream_ms: int = 0
    recovered: bool = False
    lowres: np.ndarray | None = field(default=None, compare=False, repr=False)
    picture: int = 0
    picture_fresh: bool = False


@dataclass
class DecoderStats:
    """Counters a receiver reports: what arrived, what was used and what was thrown away."""

    keyframes: int = 0
    keypoint_frames: int = 0
    rendered: int = 0
    corrupt: int = 0
    unknown_kind: int = 0
    # Parsed, but outside the limits of docs/bitstream.md: a timestamp that jumps, a sequence
    # number the timestamps cannot justify, a payload or image too large for the stream.
    implausible: int = 0
    late: int = 0
    lost: int = 0
    # Repeated copies (a message's repeat prefix): of packets already here, dropped (repeated),
    # or of packets the network lost, decoded in their place (recovered).
    repeated: int = 0
    recovered: int = 0
    undecodable: int = 0
    # Hybrid streams: low-res pictures decoded, those dropped while the low-res decoder waited
    # for an IDR (after a loss) and those that did not decode; their frames show unfused.
    lowres_pictures: int = 0
    lowres_waiting: int = 0
    lowres_corrupt: int = 0
    resyncs: int = 0  # new timelines accepted (a sender that restarted, a long absence)
    wrong_channel: int = 0  # packets on the data channel of the other kind
    packets: int = 0  # every packet parsed, of any kind
    payload_bytes: int = 0  # their payloads (the messages' bytes without packet headers)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)


class StreamDecoder:
    """The receiver's codec: packets in (any order, with losses), rendered frames out."""

    def __init__(
        self,
        header: StreamHeader,
        config: DecoderConfig | None = None,
        backend: RefinerBackend | None = None,
    ) -> None:
        """backend: the renderer's inference backend already made (warmed up before a call);
        None makes the one config.backend names. Loads every network and weights the stream
        needs, so a live receiver makes its decoder off its event loop."""
        self.header = header
        self.config = config or DecoderConfig()
        self.model = _keypoint_model(header.keypoint_model, header.expression_dims)
        step_px = header.keypoint_step_millipx / 1000
        self._keypoints = KeypointDecoder(self.model, step_px)
        self.renderer: Renderer = make_renderer(
            self.config.renderer_for(header.hybrid),
            bank_size=header.reference_bank_size,
            backend=backend or self.config.backend,
        )
        self._has_reference = False
        self.timeline = KeypointTimeline.for_stream(header)
        self._packets = PacketReader(header)
        self._keyframe_codecs: dict[int, KeyframeCodec] = {}
        # Made now, not at the first keyframe: GC loads its weights here, before the call.
        self._keyframe_codec(header.keyframe_codec)
        self._lowres = (
            LowresDecoder(header.lowres_codec, header.lowres_size) if header.hybrid else None
        )
        self._fusion = FusionConfig.for_level(header.fusion_level) if header.hybrid else None
        self._learned_fusion = None
        if header.hybrid and self.config.fusion == "learned":
            # Made (and its ONNX export loaded) now, not at the first frame.
            self._learned_fusion = LearnedFusion()
            self._learned_fusion.warm_up(header.height, header.width)
        # The last low-res picture decoded, fused with the frames between pictures; None while
        # the low-res stream waits for an IDR.
        self._last_picture: np.ndarray | None = None
        self._last_picture_ms = 0  # the stream time of _last_picture
        # (picture number, its frame's render taken down to the picture's size) for
        # lowres_compensation; None until a frame with a fresh picture is rendered.
        self._picture_render: tuple[int, np.ndarray] | None = None
        self.stats = DecoderStats()

    def _keyframe_codec(self, wire_id: int) -> KeyframeCodec:
        """The decoder of KEYFRAME payloads with `wire_id`, made once (GC loads its weights)."""
        if wire_id not in self._keyframe_codecs:
            self._keyframe_codecs[wire_id] = keyframe_codec_for_wire_id(wire_id)
        return self._keyframe_codecs[wire_id]

    @property
    def needs_keyframe(self) -> bool:
        return not self._has_reference

    @property
    def keypoints_synchronised(self) -> bool:
        """Whether the next predicted keypoint packet can be decoded (no gap since an intra),
        and in a hybrid stream its low-res picture (no gap since an IDR)."""
        lowres_ok = self._lowres is None or self._lowres.synchronised
        return self._keypoints.synchronised and lowres_ok

    def receive(self, message: bytes) -> np.ndarray | None:
        """Handle one message; returns the newest frame it made renderable, rendered
        ((H, W, 3) uint8 RGB), or None.

        Malformed messages and packets of unknown kinds are dropped and counted, never raised.
        """
        decoded = self.decode(message)
        return self.render(decoded[-1]) if decoded else None

    def receive_packet(self, packet: Packet) -> np.ndarray | None:
        """receive() for a packet already parsed (e.g. read from a .tkc file)."""
        decoded = self.decode_packet(packet)
        return None if decoded is None else self.render(decoded)

    def render(self, frame: DecodedFrame) -> np.ndarray:
        """The (H, W, 3) uint8 RGB frame for decoded keypoints.

        A live receiver decodes every packet (the keypoint prediction needs them all) but
        renders only the newest decoded frame.
        """
        image = self.renderer.render(frame.landmarks)
        if frame.lowres is not None and self.config.fusion != "none":
            image = self.fuse(self.picture_for(frame, image), image)
        self.stats.rendered += 1
        return image

    def picture_for(self, frame: DecodedFrame, render: np.ndarray) -> np.ndarray:
        """The low-res picture to fuse with `render`, the frame's render: the frame's own
        picture, and for a frame between pictures (config.lowres_compensation) the last
        picture plus what the render changed since that picture's frame, at the picture's
        size: the face moves, the rest stays. A stale picture whose own frame was not rendered
        (a live receiver renders only the newest frame) is taken as it is. Call it for each
        frame rendered, in order: a frame with a fresh picture keeps its render for the
        frames after it."""
        lowres = frame.lowres
        assert lowres is not None
        if not self.config.lowres_compensation:
            return lowres
        then = self._picture_render
        if not frame.picture_fresh and (then is None or then[0] != frame.picture):
            return lowres
        size = (lowres.shape[1], lowres.shape[0])
        small = cv2.resize(render, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        if frame.picture_fresh or then is None:
            self._picture_render = (frame.picture, small)
            return lowres
        moved = lowres.astype(np.float32) + (small - then[1])
        return np.clip(np.rint(moved), 0, 255).astype(np.uint8)

    def fuse(self, lowres: np.ndarray, render: np.ndarray) -> np.ndarray:
        """A hybrid stream's frame: the (H, W, 3) uint8 render fused with its decoded low-res
        picture, by the learned fusion or the agreement mask alone (config.fusion)."""
        if self._learned_fusion is not None:
            return self._learned_fusion.fuse(lowres, render, self.header.fusion_level)
        return fuse(lowres, render, self._fusion)

    def decode(self, message: bytes, channel: PacketKind | None = None) -> list[DecodedFrame]:
        """Handle one message (one packet, or a bundle of several); returns the keypoints of
        the frames it makes renderable, in order.

        channel: the kind of packets the data channel the message came on carries; a packet of
        another kind is dropped (`wrong_channel`): no sender puts one there, since the channels
        differ in delivery. Malformed messages and packets of unknown kinds are dropped and
        counted, never raised.
        """
        try:
            packets = self._packets.parse(message)
        except BitstreamError as error:
            self._count_drop(error)
            logger.debug("dropped message: %s", error)
            return []
        name = packets[0].kind.name.lower()
        self.stats.bytes_by_kind[name] = self.stats.bytes_by_kind.get(name, 0) + len(message)
        decoded = []
        for packet in packets:
            self.stats.packets += 1
            self.stats.payload_bytes += len(packet.payload)
            if channel is not None and packet.kind is not channel:
                self.stats.wrong_channel += 1
                continue
            frame = self.decode_packet(packet)
            if frame is not None:
                decoded.append(frame)
        return decoded

    def decode_packet(self, packet: Packet) -> DecodedFrame | None:
        """Handle one parsed packet; returns the keypoints of a frame that can be rendered, or
        None. Packets that break the stream's rules are dropped and counted, never raised."""
        try:
            if packet.kind is PacketKind.KEYFRAME:
                self._receive_keyframe(packet)
                return None
            return self._receive_keypoints(packet)
        except BitstreamError as error:
            self._count_drop(error)
            logger.debug("dropped %s packet %d: %s", packet.kind.name.lower(), packet.seq, error)
            return None

    def _count_drop(self, error: BitstreamError) -> None:
        """Count a dropped packet under its error's kind (a DecoderStats counter)."""
        setattr(self.stats, error.reason, getattr(self.stats, error.reason) + 1)

    def _receive_keyframe(self, packet: Packet) -> None:
        payload = KeyframePayload.parse(packet.payload)
        bank_size = self.header.reference_bank_size
        if payload.reference_id >= bank_size:
            raise BitstreamError(
                f"keyframe reference id: expected < {bank_size} (the bank size), "
                f"found {payload.reference_id}"
            )
        _check_keypoint_payload("keyframe", payload.keypoints)
        limit = self.header.max_keyframe_image_bytes
        if len(payload.image) > limit:
            raise ImplausiblePacket(
                f"keyframe image of {len(payload.image)} bytes: expected at most {limit} "
                f"for {self.header.width}x{self.header.height}"
            )
        codec = self._keyframe_codec(payload.codec)
        # Checked before decoding, so a corrupt size never makes a decoder allocate for it.
        self._check_keyframe_size(codec.image_size(payload.image))
        image = codec.decompress(payload.image)
        self._check_keyframe_size(image.shape[:2])
        params = self._keypoints.decode_intra(payload.keypoints)
        landmarks = self.model.reconstruct(params, self.header.width)
        self.renderer.set_reference(image, landmarks, payload.reference_id)
        self._has_reference = True
        self.stats.keyframes += 1
        if payload.reference_id == 0:
            self.timeline.note_fresh_start(packet.pts_ms)

    def _check_keyframe_size(self, size: tuple[int, ...]) -> None:
        if tuple(size) != (self.header.height, self.header.width):
            raise BitstreamError(
                f"keyframe is {size[1]}x{size[0]}, "
                f"stream is {self.header.width}x{self.header.height}"
            )

    def _receive_keypoints(self, packet: Packet) -> DecodedFrame | None:
        keypoints, picture = self._split_keypoint_payload(packet.payload)
        verdict = self.timeline.classify(packet.seq, packet.pts_ms, packet.is_intra, packet.timed)
        if verdict.arrival is Arrival.LATE:
            if packet.repeated:
                self.stats.repeated += 1
            else:
                self.stats.late += 1
            return None
        if verdict.arrival is Arrival.IMPLAUSIBLE:
            raise ImplausiblePacket(
                f"keypoint packet seq {packet.seq} at {packet.pts_ms} ms does not follow the "
                f"stream (a step of at most {MAX_PTS_STEP_MS} ms, and a seq its time justifies)"
            )
        if verdict.arrival is Arrival.RESYNC:
            self.stats.resyncs += 1
            self._reset_prediction()
        elif verdict.lost:
            self.stats.lost += verdict.lost
            self._reset_prediction()
        # Every picture in order, decodable keypoints or not: the low-res decoder needs them all.
        lowres, fresh = self._decode_lowres(picture, verdict.pts_ms)
        if not packet.is_intra and not self._keypoints.synchronised:
            self.stats.undecodable += 1
            return None
        try:
            params = self._keypoints.decode(keypoints, packet.is_intra)
        except BitstreamError:
            self._keypoints.reset()
            raise
        self.stats.keypoint_frames += 1
        self.stats.recovered += packet.repeated
        if not self._has_reference:
            return None
        landmarks = self.model.reconstruct(params, self.header.width)
        return DecodedFrame(
            landmarks,
            verdict.pts_ms,
            packet.seq,
            self.timeline.stream_ms,
            packet.repeated,
            lowres,
            self.stats.lowres_pictures,  # the number of the last picture decoded
            fresh,
        )

    def _split_keypoint_payload(self, payload: bytes) -> tuple[bytes, LowresPicture | None]:
        """(keypoint bytes, low-res picture) of a KEYPOINTS payload, checked against the
        limits; the picture is None in a keypoints-only stream."""
        if self._lowres is None:
            _check_keypoint_payload("keypoint packet", payload)
            return payload, None
        limit = MAX_KEYPOINT_PAYLOAD_BYTES + self.header.max_lowres_picture_bytes
        if len(payload) > limit:
            raise ImplausiblePacket(
                f"hybrid keypoint packet of {len(payload)} bytes: expected at most {limit}"
            )
        hybrid = HybridKeypoints.parse(payload)
        _check_keypoint_payload("keypoint packet", hybrid.keypoints)
        return hybrid.keypoints, hybrid.picture

    def _reset_prediction(self) -> None:
        """Packets were lost: keypoints wait for an intra packet, low-res pictures for an IDR."""
        self._keypoints.reset()
        if self._lowres is not None:
            self._lowres.reset()
            self._last_picture = None

    def _decode_lowres(
        self, picture: LowresPicture | None, pts_ms: int
    ) -> tuple[np.ndarray | None, bool]:
        """The frame's low-res picture, decoded, or for a packet without one the last picture
        while it is at most MAX_PICTURE_AGE_FRAMES old; None in a keypoints-only stream, while
        waiting for an IDR, or when the picture does not decode (counted lowres_corrupt: the
        frame's keypoints still count, and the low-res stream waits for an IDR)."""
        if self._lowres is None:
            return None, False
        if picture is None:
            age_ms = signed_difference(pts_ms - self._last_picture_ms, PTS_MODULO)
            if age_ms > MAX_PICTURE_AGE_FRAMES * 1000 / self.header.fps:
                return None, False
            return self._last_picture, False
        try:
            image = self._lowres.decode(picture)
        except BitstreamError as error:
            self.stats.lowres_corrupt += 1
            logger.debug("dropped low-res picture: %s", error)
            image = None
        else:
            if image is None:
                self.stats.lowres_waiting += 1
            else:
                self.stats.lowres_pictures += 1
        self._last_picture, self._last_picture_ms = image, pts_ms
        return image, image is not None


def _check_keypoint_payload(what: str, payload: bytes) -> None:
    if len(payload) > MAX_KEYPOINT_PAYLOAD_BYTES:
        raise ImplausiblePacket(
            f"{what} keypoints of {len(payload)} bytes: expected at most "
            f"{MAX_KEYPOINT_PAYLOAD_BYTES}"
        )


class HoldSchedule:
    """How often a constant-rate video shows each rendered frame (`talkcodec decode`).

    Each rendered frame takes the next slot of the video, and the slots up to the one its
    DecodedFrame.stream_ms falls in (at the stream's frame rate) repeat the previous frame
    (frames without a face, lost packets, packets that waited for a refresh), as do, at the
    end, the slots of packets after the last rendered frame. Holds are bounded twice, whatever
    the timestamps say: one gap holds at most MAX_PTS_STEP_MS worth of frames (the timeline
    never steps further), and all holds together at most as many frames as were rendered plus
    that much, so a file never shows more than 2 x rendered + 10 s of frames.
    """

    def __init__(self, fps: float) -> None:
        self.max_gap_frames = round(MAX_PTS_STEP_MS * fps / 1000)
        self._fps = fps
        self._next_slot: int | None = None  # the slot the next frame shown takes
        self.rendered = 0
        self.held = 0
        self.holds_cut = 0  # held frames a gap asked for that the bounds did not allow

    def holds_before(self, frame: DecodedFrame) -> int:
        """How many copies of the previous frame to show before `frame`, then counts `frame`."""
        self.rendered += 1
        slot = self._slot(frame.stream_ms)
        holds = self._holds_until(slot)
        self._next_slot = max(slot, self._next_slot or 0) + 1
        return holds

    def holds_at_end(self, stream_ms: int) -> int:
        """How many copies of the last frame to show at the end of a stream whose accepted
        packets cover `stream_ms` (packets after the last rendered frame that could not be
        decoded, e.g. waiting for an intra refresh)."""
        return self._holds_until(self._slot(stream_ms) + 1)

    def _slot(self, stream_ms: int) -> int:
        return round(stream_ms * self._fps / 1000)

    def _holds_until(self, slot: int) -> int:
        if self._next_slot is None:
            return 0
        wanted = max(0, slot - self._next_slot)
        budget = max(0, self.rendered + self.max_gap_frames - self.held)
        holds = min(wanted, self.max_gap_frames, budget)
        self.holds_cut += wanted - holds
        self.held += holds
        return holds

    @property
    def frames(self) -> int:
        return self.rendered + self.held


def decode_to_frames(
    decoder: StreamDecoder, packets: Iterable[Packet], schedule: HoldSchedule | None = None
) -> Iterator[np.ndarray]:
    """Every frame of a constant-rate video of `packets` (in sending order, e.g. a .tkc
    file's), held frames included (the same array repeated): the loop of `talkcodec decode`,
    bounded by HoldSchedule. Bad packets are dropped and counted in decoder.stats, never
    raised."""
    schedule = schedule or HoldSchedule(decoder.header.fps)
    previous: np.ndarray | None = None
    for packet in packets:
        decoded = decoder.decode_packet(packet)
        if decoded is None:
            continue
        holds = schedule.holds_before(decoded)
        if previous is not None:
            for _ in range(holds):
                yield previous
        previous = decoder.render(decoded)
        yield previous
    if previous is not None:
        for _ in range(schedule.holds_at_end(decoder.timeline.stream_ms)):
            yield previous
