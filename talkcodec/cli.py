"""`talkcodec` command line: encode, decode and inspect .tkc streams; live calls (send,
receive, call) are defined in talkcodec/runtime/commands.py."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from talkcodec.bitstream import (
    Arrival,
    BitstreamError,
    HybridKeypoints,
    KeyframePayload,
    KeypointTimeline,
    Packet,
    PacketFormat,
    PacketKind,
    PacketWriter,
    StreamHeader,
    TkcReader,
    TkcWriter,
)
from talkcodec.config import SenderConfig, config_path, save_config
from talkcodec.generator.backends.base import BackendUnavailable
from talkcodec.keyframe.cli import (
    KeyframeCommandError,
    add_keyframe_commands,
    run_keyframe_command,
)
from talkcodec.keypoints.base import DetectorUnavailable
from talkcodec.options import (
    OptionError,
    add_decoder_options,
    add_encoder_options,
    decoder_config,
    encoder_config,
)
from talkcodec.runtime.commands import LiveCallError, add_live_commands, run_live_command
from talkcodec.video import VideoError


class CliError(Exception):
    """A problem to report in one line, with a non-zero exit."""


def _add_encode(commands: argparse._SubParsersAction) -> None:
    encode = commands.add_parser("encode", help="encode a video file into a .tkc stream")
    encode.add_argument("input", type=Path, help="input video (any format PyAV reads)")
    encode.add_argument("-o", "--output", type=Path, required=True, help="output .tkc file")
    add_encoder_options(encode)
    encode.add_argument("--max-frames", type=int, default=None, help="stop after N frames")


def _add_decode(commands: argparse._SubParsersAction) -> None:
    decode = commands.add_parser("decode", help="render a .tkc stream into a video file")
    decode.add_argument("input", type=Path, help="input .tkc file")
    decode.add_argument("-o", "--output", type=Path, required=True, help="output video (.mp4)")
    add_decoder_options(decode)


def _add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="frames, duration and bit rates of a .tkc stream")
    info.add_argument("input", type=Path, help="input .tkc file")
    info.add_argument(
        "--json", action="store_true", help="print one JSON object (frames, duration_s, "
        "payload_kbps, file_kbps, wire_kbps, by_kind, ...)",
    )  # fmt: skip
    info.add_argument(
        "--bundle-ms", type=float, default=SenderConfig.bundle_ms, metavar="MS",
        help="the live sender's bundling the wire rate is modelled with (0: a message per "
        "frame)",
    )  # fmt: skip


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export networks for other runtimes")
    formats = export.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser("onnx", help="the GAN refiner's two networks as ONNX files")
    onnx.add_argument(
        "--weights", type=Path, default=None, help="refiner weights (default: the shipped ones)"
    )
    onnx.add_argument("--size", type=int, default=256, help="frame side in px (multiple of 4)")
    onnx.add_argument("-o", "--output", type=Path, required=True, help="output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkcodec", description="Generative video-call codec: keyframe + 3D keypoints."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_encode(commands)
    _add_decode(commands)
    _add_info(commands)
    add_live_commands(commands)
    add_keyframe_commands(commands)
    _add_export(commands)
    return parser


def run_encode(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from talkcodec.codec import StreamEncoder
    from talkcodec.video import probe, read_frames

    config = encoder_config(args)
    if not args.input.is_file():
        raise CliError(f"no such input file: {args.input}")
    _, _, _, duration_s = probe(args.input)
    expected = round(duration_s * config.fps) or None
    if args.max_frames is not None:
        expected = min(expected or args.max_frames, args.max_frames)
    encoder = StreamEncoder(config)
    packets = 0
    frames_without_face = 0
    try:
        with TkcWriter.open(args.output, encoder.header) as writer:
            frames = read_frames(args.input, config.fps, max_frames=args.max_frames)
            for index, (_, frame) in enumerate(tqdm(frames, total=expected, unit="frame")):
                pts_ms = round(index * 1000 / config.fps)
                emitted = encoder.encode(frame, pts_ms)
                frames_without_face += encoder.last_landmarks is None
                for packet in emitted:
                    writer.write(packet)
                    packets += 1
    finally:
        encoder.close()
    if packets == 0:
        args.output.unlink(missing_ok=True)
        raise CliError(f"no face found in any frame of {args.input}")
    save_config(config, config_path(args.output))
    skipped = encoder.rate_cap.skipped_frames if encoder.rate_cap is not None else 0
    cap = (
        f"{config.max_wire_kbps:g} kbit/s wire cap"
        if config.max_wire_kbps
        else f"{config.max_kbps:g} kbit/s cap"
    )
    print(
        f"wrote {args.output}: {packets} packets; {frames_without_face} frames without a face"
        + (f", {skipped} not sent under the {cap}" if skipped else "")
    )
    print_info(args.output)


def run_decode(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from talkcodec.codec import HoldSchedule, StreamDecoder, decode_to_frames
    from talkcodec.video import VideoWriter

    reader = _open_tkc(args.input)
    with reader:
        header = reader.header
        decoder = StreamDecoder(header, decoder_config(args))
        schedule = HoldSchedule(header.fps)
        packets = tqdm(reader, unit="packet")
        with VideoWriter(args.output, header.width, header.height, header.fps) as writer:
            for frame in decode_to_frames(decoder, packets, schedule):
                writer.write(frame)
    if schedule.frames == 0:
        raise CliError(f"{args.input} holds no decodable frame (no keyframe?)")
    save_config(decoder.config, config_path(args.output))
    stats = decoder.stats
    print(
        f"wrote {args.output}: {schedule.frames} frames {header.width}x{header.height} "
        f"at {header.fps:g} fps ({schedule.held} held); dropped {stats.corrupt} corrupt, "
        f"{stats.implausible} implausible, {stats.undecodable} undecodable"
        + (
            f"; {schedule.holds_cut} held frames cut (gaps beyond the limits)"
            if schedule.holds_cut
            else ""
        )
    )


def run_export(args: argparse.Namespace) -> None:
    """Write reference_encoder.onnx and frame_refiner.onnx, checked by onnx.checker."""
    from talkcodec.generator.backends.onnx_export import (
        ONNX_OPSET,
        describe_onnx,
        export_to_folder,
        resolve_weights,
    )

    try:
        weights = resolve_weights(args.weights)
        models = export_to_folder(weights, args.size, args.output)
    except ValueError as error:
        raise CliError(str(error)) from None
    print(f"exported {weights} at {args.size}x{args.size} (ONNX opset {ONNX_OPSET}, checked):")
    for path in (models.reference_encoder, models.frame_refiner):
        print(f"  {path} ({path.stat().st_size / 1e6:.2f} MB): {describe_onnx(path)}")


def _open_tkc(path: Path) -> TkcReader:
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    return TkcReader.open(path)


@dataclass(frozen=True)
class StreamInfo:
    """What `talkcodec info` reports of a .tkc file. by_kind: per packet kind (lower-case name),
    its packets, payload_bytes, packet_bytes (headers included, as in a message or record),
    wire_packets (SCTP packets) and wire_bytes (as the live call sends them, keypoints bundled
    within bundle_ms). Rates are None for a file of no frames."""

    header: StreamHeader
    bundle_ms: float
    frames: int
    duration_s: float
    file_bytes: int
    by_kind: dict[str, Counter[str]]
    dropped_by_decoders: dict[str, int]
    new_timelines: int

    def kbps(self, size: int) -> float | None:
        return round(size * 8 / self.duration_s / 1000, 4) if self.duration_s > 0 else None

    def total(self, key: str) -> int:
        return sum(counts[key] for counts in self.by_kind.values())

    def as_json(self, path: Path) -> dict[str, object]:
        header = self.header
        return {
            "file": str(path),
            "header": {
                "width": header.width,
                "height": header.height,
                "fps": header.fps,
                "keyframe_codec": header.keyframe_codec.name,
                "keypoint_model": header.keypoint_model.name,
                "expression_dims": header.expression_dims,
                "keypoint_step_px": header.keypoint_step_millipx / 1000,
                "reference_bank_size": header.reference_bank_size,
                "packet_format": header.packet_format.name,
                "lowres_codec": header.lowres_codec.name,
                "lowres_size": list(header.lowres_size),
            },
            "bundle_ms": self.bundle_ms,
            "frames": self.frames,
            "duration_s": round(self.duration_s, 4),
            "payload_kbps": self.kbps(self.total("payload_bytes")),
            "packet_kbps": self.kbps(self.total("packet_bytes")),
            "file_kbps": self.kbps(self.file_bytes),
            "wire_kbps": self.kbps(self.total("wire_bytes")),
            "wire_header_bytes_per_frame": (
                round((self.total("wire_bytes") - self.total("payload_bytes")) / self.frames, 2)
                if self.frames
                else None
            ),
            "by_kind": {
                kind: {**counts, "payload_kbps": self.kbps(counts["payload_bytes"])}
                for kind, counts in self.by_kind.items()
            },
            "lowres_kbps": self.kbps(self.total("lowres_bytes")) if header.hybrid else None,
            "dropped_by_decoders": self.dropped_by_decoders,
            "new_timelines": self.new_timelines,
        }


def stream_info(path: Path, bundle_ms: float = SenderConfig.bundle_ms) -> StreamInfo:
    """Frames, duration and bytes of a .tkc file, by packet kind: payload (packet payloads),
    packet (headers included), file (the file's bytes) and wire (as the live call sends them:
    keypoint packets bundled within bundle_ms, each message with its transport headers).

    Timestamps go through the decoders' rule (KeypointTimeline): packets it would drop are
    counted as such, and the duration is the time the accepted packets cover.
    """
    from talkcodec.transport.bundling import stream_wire_cost

    reader = _open_tkc(path)
    kinds: dict[str, Counter[str]] = {}
    arrivals: Counter[Arrival] = Counter()
    packets: list[Packet] = []
    with reader:
        header = reader.header
        writer = PacketWriter(header)
        timeline = KeypointTimeline.for_stream(header)
        for packet in reader:
            message = writer.pack(packet)
            counts = kinds.setdefault(packet.kind.name.lower(), Counter())
            counts["packets"] += 1
            counts["payload_bytes"] += len(packet.payload)
            counts["packet_bytes"] += len(message)
            packets.append(packet)
            if packet.kind is PacketKind.KEYPOINTS and header.hybrid:
                _count_hybrid_parts(packet, counts)
            if packet.kind is PacketKind.KEYPOINTS:
                verdict = timeline.classify(
                    packet.seq, packet.pts_ms, packet.is_intra, packet.timed
                )
                arrivals[verdict.arrival] += 1
            elif _is_fresh_start(packet):
                timeline.note_fresh_start(packet.pts_ms)
    for kind, cost in stream_wire_cost(header, packets, bundle_ms).items():
        kinds[kind].update(wire_packets=cost.packets, wire_bytes=cost.wire_bytes)
    frames = arrivals[Arrival.NEXT] + arrivals[Arrival.RESYNC]
    return StreamInfo(
        header=header,
        bundle_ms=bundle_ms if header.packet_format is PacketFormat.COMPACT else 0.0,
        frames=frames,
        duration_s=(timeline.stream_ms + timeline.frame_ms) / 1000 if frames else 0.0,
        file_bytes=path.stat().st_size,
        by_kind=dict(sorted(kinds.items())),
        dropped_by_decoders={
            "implausible": arrivals[Arrival.IMPLAUSIBLE],
            "late": arrivals[Arrival.LATE],
        },
        new_timelines=arrivals[Arrival.RESYNC],
    )


def print_info(
    path: Path, as_json: bool = False, bundle_ms: float = SenderConfig.bundle_ms
) -> None:
    """stream_info as one JSON object, or as a table of bytes and kbit/s by packet kind."""
    info = stream_info(path, bundle_ms)
    if as_json:
        print(json.dumps(info.as_json(path)))
        return
    header = info.header
    print(
        f"{path}: {header.width}x{header.height} at {header.fps:g} fps, keyframe codec "
        f"{header.keyframe_codec.name}, keypoint model {header.keypoint_model.name} "
        f"({header.expression_dims} expression dims, "
        f"step {header.keypoint_step_millipx / 1000:g} px, bank of {header.reference_bank_size}"
        f"), {header.packet_format.name.lower()} packets"
    )
    print(f"frames: {info.frames}, duration: {info.duration_s:.2f} s")
    dropped = info.dropped_by_decoders
    if dropped["implausible"] or dropped["late"] or info.new_timelines > 1:
        print(
            f"implausible: {dropped['implausible']} keypoint packets whose seq or pts_ms break "
            f"the limits, {dropped['late']} late or repeated (decoders drop both); "
            f"{info.new_timelines} new timelines"
        )
    if info.duration_s <= 0:
        return
    print(
        f"  {'kind':<10} {'packets':>7} {'wire pkts':>9} {'payload B':>10} {'kbit/s':>8} "
        f"{'+headers':>9} {'wire':>8}"
    )
    total = sum(info.by_kind.values(), Counter())
    for kind, counts in [*info.by_kind.items(), ("total", total)]:
        size, count = counts["payload_bytes"], counts["packets"]
        rates = (size, counts["packet_bytes"], counts["wire_bytes"])
        cells = [
            f"{info.kbps(value):{width}.2f}" for value, width in zip(rates, (8, 9, 8), strict=True)
        ]
        wire_packets = counts["wire_packets"]
        print(f"  {kind.upper():<10} {count:>7} {wire_packets:>9} {size:>10} " + " ".join(cells))
    print(
        f"file: {info.kbps(info.file_bytes):.2f} kbit/s; on the wire (modelled, keypoints "
        f"bundled within {info.bundle_ms:g} ms): {info.kbps(info.total('wire_bytes')):.2f}"
    )
    if "keypoints" in info.by_kind and info.frames:
        counts = info.by_kind["keypoints"]
        key = "keypoint_bytes" if header.hybrid else "payload_bytes"
        print(f"keypoints: {counts[key] * 8 / info.frames:.1f} payload bits/frame")
        if header.hybrid:
            width, height = header.lowres_size
            print(
                f"low-res {header.lowres_codec.name} {width}x{height}: "
                f"{info.kbps(counts['lowres_bytes']):.2f} kbit/s of payload "
                f"({counts['lowres_idr']} IDR pictures)"
            )


def _count_hybrid_parts(packet: Packet, counts: Counter[str]) -> None:
    """A hybrid keypoint packet's bytes by part: keypoint_bytes, lowres_bytes (pictures, their
    unit counts and lengths included) and lowres_idr pictures; a malformed one as malformed."""
    try:
        hybrid = HybridKeypoints.parse(packet.payload)
    except BitstreamError:
        counts["malformed"] += 1
        return
    counts["keypoint_bytes"] += len(hybrid.keypoints)
    counts["lowres_bytes"] += len(packet.payload) - len(hybrid.keypoints)
    counts["lowres_idr"] += hybrid.picture is not None and hybrid.picture.idr


def _is_fresh_start(packet: Packet) -> bool:
    """A KEYFRAME packet for reference slot 0 (a malformed payload is none)."""
    try:
        return KeyframePayload.parse(packet.payload).reference_id == 0
    except BitstreamError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        if args.command == "encode":
            run_encode(args)
        elif args.command == "decode":
            run_decode(args)
        elif args.command == "info":
            print_info(args.input, as_json=args.json, bundle_ms=args.bundle_ms)
        elif args.command == "keyframe":
            run_keyframe_command(args)
        elif args.command == "export":
            run_export(args)
        else:
            run_live_command(args)
    except (
        CliError,
        OptionError,
        KeyframeCommandError,
        LiveCallError,
        BitstreamError,
        VideoError,
        DetectorUnavailable,
        BackendUnavailable,
        OSError,
    ) as error:
        print(f"talkcodec: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
