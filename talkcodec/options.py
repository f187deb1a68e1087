"""Command-line flags of the configs, each defined once: the encoder's (encode, send, call) and
the decoder's (decode, receive, call), mapping 1:1 onto EncoderConfig and DecoderConfig."""

from __future__ import annotations

import argparse

from talkcodec.bitstream import DEFAULT_BANK_SIZE
from talkcodec.config import (
    AUTO_RENDERER,
    FUSION_MODES,
    HYBRID_BANK_SIZE,
    HYBRID_KEYFRAME_QUALITIES,
    PACKET_FORMATS,
    DecoderConfig,
    EncoderConfig,
)

_DEFAULTS = EncoderConfig()


class OptionError(ValueError):
    """Flags that make no valid config; the message says which value is out of range."""


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """The EncoderConfig fields, one flag each (shared by encode, send and call)."""
    from talkcodec.keyframe import KEYFRAME_CODECS, Av1Codec, JpegCodec, WebPCodec
    from talkcodec.keypoints.detectors import DETECTORS
    from talkcodec.keypoints.registry import KEYPOINT_CODERS

    parser.add_argument("--size", type=int, default=_DEFAULTS.size_px, help="crop side in px")
    parser.add_argument("--fps", type=float, default=_DEFAULTS.fps, help="stream frame rate")
    parser.add_argument("--no-crop", action="store_true", help="input is already a face crop")
    parser.add_argument("--detector", choices=list(DETECTORS), default=_DEFAULTS.detector)
    parser.add_argument(
        "--keyframe-codec", choices=list(KEYFRAME_CODECS), default=_DEFAULTS.keyframe_codec
    )
    parser.add_argument(
        "--keyframe-quality",
        type=int,
        default=None,
        help=f"webp/jpeg quality 1-100 (default: webp {WebPCodec.default_quality}"
        f", or {HYBRID_KEYFRAME_QUALITIES['webp']} with --lowres; jpeg "
        f"{JpegCodec.default_quality}); av1: 0-62, 63 minus the CRF (default "
        f"{Av1Codec.default_quality}, or {HYBRID_KEYFRAME_QUALITIES['av1']} with --lowres); gc: "
        "latent channels 2, 4, 8, 12 or 16 (default 8)",
    )
    parser.add_argument(
        "--keypoint-step",
        type=float,
        default=_DEFAULTS.keypoint_step_px,
        help="keypoint quantisation step in px at 256x256",
    )
    parser.add_argument(
        "--expression-dims",
        type=int,
        default=_DEFAULTS.expression_dims,
        help="expression basis directions to code",
    )
    parser.add_argument(
        "--keypoint-rdo-lambda", type=float, default=_DEFAULTS.keypoint_rdo_lambda_px2,
        metavar="L", help="the keypoint coder's rate-distortion trade-off: squared px of "
        "error one bit is worth (0: plain rounding)",
    )  # fmt: skip
    parser.add_argument(
        "--keypoint-coder", choices=list(KEYPOINT_CODERS), default=_DEFAULTS.keypoint_coder,
        help="v3: each change in the context of the frame's earlier ones (fewer bits); v2: "
        "the earlier coder",
    )  # fmt: skip
    parser.add_argument(
        "--refresh-interval",
        type=float,
        default=_DEFAULTS.keypoint_refresh_interval_s,
        help="seconds between intra-coded keypoint frames (0: only the first)",
    )
    parser.add_argument(
        "--keyframe-interval",
        type=float,
        default=_DEFAULTS.keyframe_interval_s,
        help="seconds between periodic keyframes (0: only at start, on request, on crop "
        "moves and when the face is found again)",
    )
    parser.add_argument(
        "--packet-format", choices=list(PACKET_FORMATS), default=_DEFAULTS.packet_format,
        help="packet layout: compact (2-byte headers, implied timestamps, bundles) or fixed "
        "(the 8-byte headers older readers take)",
    )  # fmt: skip
    parser.add_argument(
        "--max-kbps", type=float, default=_DEFAULTS.max_kbps, metavar="K",
        help="cap the whole stream at K kbit/s, keyframes included (file bytes; frames that "
        "do not fit are not sent, keyframes take the best quality that fits; 0: no cap)",
    )  # fmt: skip
    parser.add_argument(
        "--max-wire-kbps", type=float, default=_DEFAULTS.max_wire_kbps, metavar="K",
        help="the same cap counted on the wire: every packet with the SCTP/DTLS/UDP/IPv4 "
        "headers of a live call, keypoints bundled as --bundle-ms says (40 where the command "
        "has none); instead of --max-kbps",
    )  # fmt: skip
    parser.add_argument(
        "--lowres", type=int, default=_DEFAULTS.lowres_px, metavar="PX",
        help="hybrid mode (the default, 48): also send the face crop at PX x PX as an x264 "
        "stream inside the keypoint packets, fused with the render on the receiver "
        "(0: keypoints only)",
    )  # fmt: skip
    parser.add_argument(
        "--lowres-kbps", type=float, default=_DEFAULTS.lowres_kbps, metavar="K",
        help="the low-res stream's bitrate target in kbit/s (with --lowres)",
    )  # fmt: skip
    parser.add_argument(
        "--lowres-every", type=int, default=_DEFAULTS.lowres_every_frames, metavar="N",
        help="a low-res picture in every Nth frame's packet; the frames between fuse the last",
    )  # fmt: skip
    parser.add_argument(
        "--lowres-motion", type=float, default=_DEFAULTS.lowres_motion, metavar="PX",
        help="with --lowres-every > 1: a picture sooner once the face moved this many low-res "
        "pixels since the last one (0: the fixed cadence)",
    )  # fmt: skip
    _add_reference_options(parser)


def _add_reference_options(parser: argparse.ArgumentParser) -> None:
    from talkcodec.keyframe import KEYFRAME_CODECS

    parser.add_argument(
        "--reference-bank-size", type=int, default=0, metavar="N",
        help="references the receiver holds (1: the keyframe only, no extra references; "
        f"default: {HYBRID_BANK_SIZE} with --lowres, else {DEFAULT_BANK_SIZE})",
    )  # fmt: skip
    parser.add_argument(
        "--reference-threshold", type=float, default=_DEFAULTS.reference_threshold,
        help="descriptor distance from every held reference that makes a frame a new "
        "reference (default: 2.0 in a GC stream with GC references, else 2.5)",
    )  # fmt: skip
    parser.add_argument(
        "--min-reference-interval", type=float, default=_DEFAULTS.min_reference_interval_s,
        metavar="S", help="seconds since the last keyframe before a new reference may be sent",
    )  # fmt: skip
    parser.add_argument(
        "--reference-budget", type=float, default=_DEFAULTS.reference_budget_kbps,
        metavar="KBPS", help="long-run kbit/s extra references may add (0: no cap)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-codec", choices=list(KEYFRAME_CODECS), default=None,
        help="codec of the extra references (default: the keyframe codec)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-quality", type=int, default=None,
        help="the extra references' quality, as --keyframe-quality (default: the codec's)",
    )  # fmt: skip


def encoder_config(args: argparse.Namespace) -> EncoderConfig:
    try:
        return EncoderConfig(
            size_px=args.size,
            fps=args.fps,
            crop=not args.no_crop,
            detector=args.detector,
            keyframe_codec=args.keyframe_codec,
            keyframe_quality=args.keyframe_quality,
            keypoint_step_px=args.keypoint_step,
            expression_dims=args.expression_dims,
            keypoint_coder=args.keypoint_coder,
            keypoint_rdo_lambda_px2=args.keypoint_rdo_lambda,
            keypoint_refresh_interval_s=args.refresh_interval,
            keyframe_interval_s=args.keyframe_interval,
            reference_bank_size=args.reference_bank_size,
            reference_threshold=args.reference_threshold,
            min_reference_interval_s=args.min_reference_interval,
            reference_budget_kbps=args.reference_budget,
            reference_codec=args.reference_codec or "",
            reference_quality=args.reference_quality,
            packet_format=args.packet_format,
            max_kbps=args.max_kbps,
            max_wire_kbps=args.max_wire_kbps,
            wire_bundle_ms=getattr(args, "bundle_ms", _DEFAULTS.wire_bundle_ms),
            lowres_px=args.lowres,
            lowres_kbps=args.lowres_kbps,
            lowres_every_frames=args.lowres_every,
            lowres_motion=args.lowres_motion,
        )
    except ValueError as error:
        raise OptionError(str(error)) from None


def add_decoder_options(parser: argparse.ArgumentParser) -> None:
    """The DecoderConfig fields, one flag each (shared by decode, receive and call). The bank
    size is not among them: the receiver follows the sender's, from the stream header."""
    from talkcodec.generator import RENDERERS
    from talkcodec.generator.backends import BACKEND_CHOICES

    parser.add_argument(
        "--renderer", choices=[AUTO_RENDERER, *RENDERERS], default=DecoderConfig.renderer,
        help="auto: headwarp for fused hybrid streams, gan for the others",
    )  # fmt: skip
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default=DecoderConfig.backend,
        help="inference backend of the gan renderer (auto: tensorrt on an NVIDIA GPU, else "
        "onnxruntime)",
    )  # fmt: skip
    parser.add_argument(
        "--no-fusion", dest="fusion", action="store_const", const="none",
        default=DecoderConfig.fusion,
        help="hybrid streams: show the render alone, without the low-res picture (--fusion none)",
    )  # fmt: skip
    parser.add_argument(
        "--fusion", choices=FUSION_MODES, default=DecoderConfig.fusion,
        help="hybrid streams: fuse with the learned network on top of the agreement mask, with "
        "the mask alone, or not at all",
    )  # fmt: skip
    parser.add_argument(
        "--no-lowres-compensation", dest="lowres_compensation", action="store_false",
        help="hybrid streams with a picture every few packets: show the last picture as it was "
        "between pictures, instead of moved with the face by the render's change",
    )  # fmt: skip


def decoder_config(args: argparse.Namespace) -> DecoderConfig:
    return DecoderConfig(
        renderer=args.renderer,
        backend=args.backend,
        fusion=args.fusion,
        lowres_compensation=args.lowres_compensation,
    )
