"""Typed configuration of the sender and the receiver: the codec (EncoderConfig, DecoderConfig)
and the live call around it (SenderConfig, ReceiverConfig); CLI flags map 1:1 onto these
fields (talkcodec.options), and each run saves the resolved config beside its outputs
(save_config)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from talkcodec.bitstream import DEFAULT_BANK_SIZE, MAX_BANK_SIZE, PacketFormat
from talkcodec.transport.fragmentation import DEFAULT_FRAGMENT_BYTES
from talkcodec.transport.link import LinkConfig

PACKET_FORMATS = {"compact": PacketFormat.COMPACT, "fixed": PacketFormat.FIXED}


def _check_bank_size(bank_size: int) -> None:
    if not 1 <= bank_size <= MAX_BANK_SIZE:
        raise ValueError(f"reference_bank_size must be in 1..{MAX_BANK_SIZE}, got {bank_size}")


# The reference threshold (EncoderConfig.reference_threshold) by (keyframe codec, references'
# codec); others take DEFAULT_REFERENCE_THRESHOLD. GC references in a WebP stream keep it: at
# 2.0 there the worst dev person lost 1.48 dB and 0.094 HaarPSI against a bank of 1 (0.37 dB
# and 0.044 at 2.5), as frames near a GC reference are rendered from a poorer picture.
DEFAULT_REFERENCE_THRESHOLD = 2.5
REFERENCE_THRESHOLDS = {("gc", "gc"): 2.0}
# A hybrid stream's defaults where the keypoint-only ones do not fit it (EncoderConfig: a
# reference_bank_size of 0 and a keyframe_quality of None resolve by the mode). The fusion
# takes the face's low band from the low-res pictures, so a cheap keyframe and no extra
# references pay best there: on dev at 48 px, 4 kbit/s, a picture every third packet, a WebP
# keyframe at quality 30 (2.7 KB) gave HaarPSI 0.638 for 7.21 kbit/s and quality 80 (5.6 KB)
# 0.644 for 10.35; GC references added 1.3 kbit/s for less HaarPSI per bit
# (benchmarks/results/bandwidth-256-talkcodec-*-hybrid48-*.md).
# The keyframe codec, AV1 intra (EncoderConfig.keyframe_codec): in a hybrid stream at quality
# 24 (CRF 39), where on dev it coded the keyframes in 58-69% of WebP q30's bytes (1.2-3.0 KB)
# for the same quality: the default point 6.17 kbit/s against 7.21 for HaarPSI 0.643 against
# 0.644 (every person within -0.004..+0.003), PSNR -0.02 dB, AKD +0.04 px
# (benchmarks/results/bandwidth-256-talkcodec-h264-hybrid48.md); quality 28 gave 6.66 kbit/s
# for 0.642 with fusion v4 (0.639 at 24; a one-off run). In a keypoint-only stream at the
# codec's default, 40 (CRF 23), with a bank of 4 and the gan renderer: 14.39 kbit/s against
# 17.93 for WebP q80, HaarPSI 0.592 against 0.590 (per person -0.001..+0.007), PSNR 22.80 both,
# AKD 1.27 both (a one-off run of bandwidth.py with one quality per codec).
HYBRID_BANK_SIZE = 1
HYBRID_KEYFRAME_QUALITIES = {"webp": 30, "av1": 24}


@dataclass(frozen=True)
class EncoderConfig:
    """What the sender does with each camera frame.

    The keypoint operating point (step and basis size) was chosen from
    `python benchmarks/keypoints.py`: see benchmarks/results/keypoints.json.
    """

    size_px: int = 256
    fps: float = 25.0
    crop: bool = True
    detector: str = "mediapipe"
    keyframe_codec: str = "av1"
    # None (the default): the codec's own default quality, or in a hybrid stream
    # HYBRID_KEYFRAME_QUALITIES where it names the codec.
    keyframe_quality: int | None = None
    keypoint_step_px: float = 0.3
    expression_dims: int = 32
    # The keypoint coder (talkcodec.entropy.keypoints): "v3" (the default), which codes each
    # change in the context of the frame's earlier ones, or "v2". Its rate-distortion
    # quantiser: what a bit is worth in squared px of mean face-point error (0: plain
    # rounding). V3 at 0.009 with an intra refresh every 4 s: 31.1 bits/frame at 0.59 px on
    # dev; V2 at 0.008 with a refresh every 2 s (--keypoint-coder v2 --keypoint-rdo-lambda
    # 0.008 --refresh-interval 2): 34.8 bits at 0.59 px (benchmarks/results/keypoints.md).
    # Live receivers ask for an intra frame as soon as they miss one, so the refresh is only
    # for receivers that cannot ask (a file's reader seeking, a receiver joining late).
    keypoint_coder: str = "v3"
    keypoint_rdo_lambda_px2: float = 0.009
    keypoint_refresh_interval_s: float = 4.0
    # A fresh start (keyframe into slot 0, emptying the reference bank) every this many seconds
    # of stream time since the last one (0: only when needed).
    keyframe_interval_s: float = 0.0
    # The reference bank (talkcodec.bank): how many references the receiver holds
    # (1: only the keyframe, no extra references). A frame whose decoded face is farther than
    # reference_threshold (descriptor distance units) from every reference becomes a new
    # reference, at most one per min_reference_interval_s since the last keyframe. The defaults
    # were chosen with `python benchmarks/references.py` (benchmarks/results/references-*.md):
    # with the mesh warp, threshold 2.5 sends 0-5 references per 5-10 s dev clip (2.4 on
    # average) for +2.1 dB PSNR and +15 kbit/s of WebP keyframes; 1.5 sent 4.8 (+1.2 dB more for
    # +14 kbit/s more), 3.5 sent 1.0 (half the gain). An interval of 0.5 s added a fifth more
    # references for +0.2 dB. None (the default): by the stream's codecs (REFERENCE_THRESHOLDS):
    # GC references cost a tenth of WebP's, so a GC stream sends them at a smaller distance;
    # with the gan renderer, a GC stream at 2.0 gains +1.70 dB / +0.046 HaarPSI for +1.86
    # kbit/s, WebP at 2.5 +1.49 dB / +0.046 for +10.9 (benchmarks/results/references-*-gan.md).
    # 0 (the default): by the mode, HYBRID_BANK_SIZE in a hybrid stream, else DEFAULT_BANK_SIZE.
    reference_bank_size: int = 0
    reference_threshold: float | None = None
    min_reference_interval_s: float = 1.0
    # A cap on what extra references cost: a token bucket that fills at reference_budget_kbps
    # and holds reference_burst_s seconds of it (it starts full), so a call sends a few
    # references early and then at most this average rate (0: no cap). With GC keyframes of
    # ~0.5 KB (8 channels at 256x256) the 1 s minimum interval binds first; with WebP ones of
    # 4-12 KB, 4 kbit/s is one reference every 8-24 s once the first burst is spent.
    reference_budget_kbps: float = 4.0
    reference_burst_s: float = 20.0
    # The codec of the extra references (keyframes into slots 1.., each packet names its
    # codec), and its quality; "" (the default): the keyframe codec at keyframe_quality.
    reference_codec: str = ""
    reference_quality: int | None = None
    # The packets' wire layout (docs/bitstream.md): compact (2-byte headers, implied
    # timestamps, bundles) or fixed (the 8-byte headers of stream revision 2, for old readers).
    packet_format: str = "compact"
    # A cap on the whole stream in kbit/s, keyframes included (talkcodec.ratecontrol: keyframe
    # quality, references and frames sent are chosen to stay under it); 0: no cap.
    max_kbps: float = 0.0
    # The same cap counted on the wire instead (0: none): every packet with the SCTP/DTLS/UDP/
    # IPv4 headers of the default transport (talkcodec/transport/overhead.py), keypoint packets
    # sharing messages as bundled within wire_bundle_ms (the sender's --bundle-ms), keyframes
    # in their fragments. One of max_kbps and max_wire_kbps.
    max_wire_kbps: float = 0.0
    wire_bundle_ms: float = 40.0
    # The hybrid mode (talkcodec.lowres), the default: the face crop also coded at lowres_px x
    # lowres_px by x264 at about lowres_kbps, a picture in every lowres_every_frames-th
    # keypoint packet, which the receiver fuses with its render (talkcodec.generator.fusion).
    # 0: keypoints only. 48 px at 4 kbit/s with a picture every third packet by measurement on
    # dev against H.264 at full and reduced sizes (README, Hybrid mode): HaarPSI 0.643 for 6.17
    # kbit/s with the AV1 keyframe, where H.264 needs 9.8; 64 px and above cost x264's
    # floor (at least ~13 bytes a picture) on more pixels, every second packet bought nothing
    # at equal bits and every packet lost.
    lowres_px: int = 48
    lowres_kbps: float = 4.0
    # A picture in every this many keypoint packets (x264 then codes at fps / this); the
    # receiver fuses the frames between with the last picture, moved with the render.
    lowres_every_frames: int = 3
    # With lowres_every_frames > 1: a picture sooner, in the next packet, once the decoded face
    # points have moved by more than this many low-res pixels (their mean displacement since
    # the last picture's frame), so fast motion gets pictures at up to the full frame rate.
    # 0: the fixed cadence.
    lowres_motion: float = 0.0

    def __post_init__(self) -> None:
        # The mode's defaults, resolved here so every reader (and the saved config) sees them.
        if self.reference_bank_size == 0:
            bank = HYBRID_BANK_SIZE if self.lowres_px else DEFAULT_BANK_SIZE
            object.__setattr__(self, "reference_bank_size", bank)
        if self.keyframe_quality is None and self.lowres_px:
            quality = HYBRID_KEYFRAME_QUALITIES.get(self.keyframe_codec)
            object.__setattr__(self, "keyframe_quality", quality)
        if self.packet_format not in PACKET_FORMATS:
            raise ValueError(
                f"packet_format must be one of {', '.join(PACKET_FORMATS)}, "
                f"got {self.packet_format!r}"
            )
        if self.keypoint_coder not in ("v2", "v3"):
            raise ValueError(f"keypoint_coder must be v2 or v3, got {self.keypoint_coder!r}")
        if self.max_kbps < 0:
            raise ValueError(f"max_kbps must be >= 0 (0: no cap), got {self.max_kbps}")
        if self.max_wire_kbps < 0:
            raise ValueError(f"max_wire_kbps must be >= 0 (0: no cap), got {self.max_wire_kbps}")
        if self.max_kbps > 0 and self.max_wire_kbps > 0:
            raise ValueError("give one of max_kbps (file bytes) and max_wire_kbps (wire bytes)")
        if not 0 <= self.wire_bundle_ms <= 1000:
            raise ValueError(f"wire_bundle_ms must be in 0..1000, got {self.wire_bundle_ms}")
        if not 16 <= self.size_px <= 4096:
            raise ValueError(f"size_px must be in 16..4096, got {self.size_px}")
        # The stream header's limits (talkcodec.bitstream MIN_FPS_MILLI, MAX_FPS_MILLI).
        if not 1 <= self.fps <= 240:
            raise ValueError(f"fps must be in 1..240, got {self.fps}")
        if not 0.001 <= self.keypoint_step_px <= 65.0:
            raise ValueError(f"keypoint_step_px must be in 0.001..65, got {self.keypoint_step_px}")
        if self.keypoint_rdo_lambda_px2 < 0:
            raise ValueError(
                f"keypoint_rdo_lambda_px2 must be >= 0, got {self.keypoint_rdo_lambda_px2}"
            )
        if self.keypoint_refresh_interval_s < 0:
            raise ValueError("keypoint_refresh_interval_s must be >= 0")
        if self.keyframe_interval_s < 0:
            raise ValueError(f"keyframe_interval_s must be >= 0, got {self.keyframe_interval_s}")
        _check_bank_size(self.reference_bank_size)
        if self.lowres_px and not (
            16 <= self.lowres_px <= self.size_px and self.lowres_px % 2 == 0
        ):
            raise ValueError(
                f"lowres_px must be 0 (off) or even in 16..size_px ({self.size_px}), "
                f"got {self.lowres_px}"
            )
        if self.lowres_kbps <= 0:
            raise ValueError(f"lowres_kbps must be > 0, got {self.lowres_kbps}")
        if not 1 <= self.lowres_every_frames <= 8:
            raise ValueError(f"lowres_every_frames must be in 1..8, got {self.lowres_every_frames}")
        if self.lowres_motion < 0:
            raise ValueError(f"lowres_motion must be >= 0, got {self.lowres_motion}")
        if self.reference_threshold is not None and not self.reference_threshold > 0:
            raise ValueError(f"reference_threshold must be > 0, got {self.reference_threshold}")
        if self.reference_budget_kbps < 0 or self.reference_burst_s < 0:
            raise ValueError("reference_budget_kbps and reference_burst_s must be >= 0")
        if self.min_reference_interval_s < 0:
            raise ValueError(
                f"min_reference_interval_s must be >= 0, got {self.min_reference_interval_s}"
            )

    @property
    def refresh_interval_frames(self) -> int:
        return round(self.keypoint_refresh_interval_s * self.fps)

    @property
    def reference_threshold_used(self) -> float:
        """reference_threshold, or where it is None the default for the keyframe and reference
        codecs."""
        if self.reference_threshold is not None:
            return self.reference_threshold
        codecs = (self.keyframe_codec, self.reference_codec or self.keyframe_codec)
        return REFERENCE_THRESHOLDS.get(codecs, DEFAULT_REFERENCE_THRESHOLD)


@dataclass(frozen=True)
class DecoderConfig:
    """How the receiver turns keyframes and keypoints back into frames."""

    # gan: warp v2 + the trained refiner (weights/refiner-v1.safetensors); headwarp: warp v2
    # alone; meshwarp: the basic face-mesh warp; auto: headwarp for hybrid streams that are
    # fused (the fusion brings what the refiner would, for half the receiver's time: on dev,
    # GC hybrid 48 px at 4 and 6 kbit/s, -0.01..-0.03 dB PSNR and -0.001..-0.002 HaarPSI on
    # average, no person below -0.19 dB / -0.011), gan for every other stream.
    renderer: str = "auto"
    # Inference backend of the gan renderer: auto (tensorrt with an NVIDIA GPU, else
    # onnxruntime), torch, torch-bf16, onnxruntime or tensorrt.
    backend: str = "auto"
    # Hybrid streams: how the receiver fuses its render with the low-res picture: "learned",
    # the fusion network (weights/fusion-v5.safetensors, on ONNX Runtime) on top of the
    # agreement mask; "mask", the training-free agreement mask alone
    # (talkcodec.generator.fusion); "none", the render alone, as for a keypoints-only stream.
    fusion: str = "learned"
    # Hybrid streams with a picture every few packets: between pictures, move the last
    # picture with the face by the change of the render since that picture's frame (the two
    # renders taken down to the picture's size), instead of showing it as it was.
    lowres_compensation: bool = True

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_MODES:
            raise ValueError(
                f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSION_MODES)}"
            )

    def renderer_for(self, hybrid: bool) -> str:
        """The renderer a stream gets: `renderer`, with auto resolved for a hybrid stream or
        not."""
        if self.renderer != AUTO_RENDERER:
            return self.renderer
        return "headwarp" if hybrid and self.fusion != "none" else "gan"


AUTO_RENDERER = "auto"


FUSION_MODES = ("learned", "mask", "none")
REDUNDANCY_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class SenderConfig:
    """How the sender puts packets on the channels.

    simulate_loss: probability of dropping each keypoint message before it is sent (seeded by
    loss_seed), to measure recovery. fragment_bytes: largest keyframe-channel message.
    bundle_ms: how long a frame's keypoints may wait for the next frames' so that they travel
    in one data-channel message (each message costs ~85 bytes of headers on the wire); 0 sends
    each frame at once. A bundle holds the frames captured within bundle_ms of its first.
    adapt_rate: follow the receiver's reports (talkcodec.ratecontrol.RateAdapter): on loss or
    a growing delay, lower the stream's rate (the rate cap's target, under --max-kbps) and
    bundle longer (up to the playout buffer's 200 ms). link: send through a modelled
    bottleneck (talkcodec.transport.link) instead of straight onto the channels; None: not.
    redundancy: whether each keypoint message repeats the previous message's packets (a
    repeat prefix, docs/bitstream.md), so one lost message costs no frames: "auto" while the
    receiver reports loss (from the first report with >= 1% until 10 s without), "on", "off".
    """

    simulate_loss: float = 0.0
    loss_seed: int = 0
    fragment_bytes: int = DEFAULT_FRAGMENT_BYTES
    bundle_ms: float = 40.0
    adapt_rate: bool = True
    link: LinkConfig | None = None
    redundancy: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.simulate_loss < 1:
            raise ValueError(f"simulate_loss must be in [0, 1), got {self.simulate_loss}")
        if self.redundancy not in REDUNDANCY_MODES:
            raise ValueError(
                f"redundancy must be one of {', '.join(REDUNDANCY_MODES)}, got {self.redundancy!r}"
            )
        if not 0 <= self.bundle_ms <= 1000:
            raise ValueError(f"bundle_ms must be in 0..1000, got {self.bundle_ms}")


@dataclass(frozen=True)
class AudioConfig:
    """The call's Opus audio (talkcodec/audio): what the sender encodes and how the receiver
    plays it out.

    bitrate_kbps: Opus target (VBR, voip mode). frame_ms: audio per RTP packet; each packet
    costs ~58 bytes of RTP/SRTP/UDP/IPv4 headers, so 40 ms frames halve the headers of 20 ms
    ones for 20 ms more latency. fec: Opus in-band FEC tuned for expected_loss_pct. aiortc's
    decoder (FFmpeg's libopus wrapper) never decodes the FEC data itself, but the encoder's
    loss-robust mode measured better intelligibility with and without loss
    (benchmarks/results/audio.md), so it stays on; browsers decode the FEC too.
    simulate_loss: probability of dropping each audio packet before it is sent (seeded by
    loss_seed). max_sync_delay_ms: the most the receiver holds audio back to meet the picture.
    """

    enabled: bool = True
    bitrate_kbps: float = 10.0
    frame_ms: int = 40
    fec: bool = True
    expected_loss_pct: int = 10
    simulate_loss: float = 0.0
    loss_seed: int = 1
    max_sync_delay_ms: float = 400.0

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 40, 60):
            raise ValueError(f"audio frame_ms must be 10, 20, 40 or 60, got {self.frame_ms}")
        if not 6 <= self.bitrate_kbps <= 128:
            raise ValueError(f"audio bitrate_kbps must be in 6..128, got {self.bitrate_kbps}")
        if not 0 <= self.expected_loss_pct <= 100:
            raise ValueError(
                f"audio expected_loss_pct must be in 0..100, got {self.expected_loss_pct}"
            )
        if not 0 <= self.simulate_loss < 1:
            raise ValueError(f"audio simulate_loss must be in [0, 1), got {self.simulate_loss}")


@dataclass(frozen=True)
class ReceiverConfig:
    """max_message_bytes: larger messages are dropped unread. keyframe_request_interval_s: how
    often to repeat a keyframe request while there is no reference. request_refresh: ask for an
    intra keypoint packet as soon as a gap is noticed (else wait for the periodic refresh)."""

    decoder: DecoderConfig = DecoderConfig()
    max_message_bytes: int = 64 * 1024
    keyframe_request_interval_s: float = 1.0
    refresh_request_interval_s: float = 0.1
    report_interval_s: float = 1.0
    request_refresh: bool = True


def cache_dir(*parts: str) -> Path:
    """Where talkcodec keeps what it derives and can make again (landmark tracks, training
    crops, ONNX exports, TensorRT engines), never in the repository:
    $XDG_CACHE_HOME/talkcodec/PARTS, by default ~/.cache/talkcodec/PARTS."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base, "talkcodec", *parts)


def config_path(output: Path) -> Path:
    """Where a run that wrote `output` saves its resolved config: OUTPUT.config.json."""
    return output.with_name(output.name + ".config.json")


def save_config(config: object, path: Path) -> None:
    """Write a resolved config as JSON beside a run's outputs."""
    path.write_text(json.dumps(asdict(config), indent=2) + "\n")  # type: ignore[call-overload]
