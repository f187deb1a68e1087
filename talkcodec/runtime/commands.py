"""The live-call commands of the CLI: `talkcodec send`, `talkcodec receive`, `talkcodec call`.

Only argparse and the standard library are imported at module level: aiortc, mediapipe and the
renderer load when a live command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from talkcodec.audio.receive import AudioReceiver
    from talkcodec.audio.sources import AudioSource
    from talkcodec.config import AudioConfig, DecoderConfig, EncoderConfig, ReceiverConfig
    from talkcodec.generator.backends.base import RefinerBackend
    from talkcodec.runtime.receiver import CallReceiver, FrameSink
    from talkcodec.runtime.sinks import InputFrames
    from talkcodec.runtime.sources import FrameSource

LIVE_COMMANDS = ("send", "receive", "call")
DEFAULT_CALL_OUTPUT = Path("call.mp4")
DEFAULT_DEMO_DURATION_S = 12.0


class LiveCallError(RuntimeError):
    """A live call cannot start or went wrong; one line for the user."""


def _add_source_options(parser: argparse.ArgumentParser, demo: bool) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index")
    source.add_argument("--video", type=Path, metavar="FILE", help="a file played as a camera")
    if demo:
        source.add_argument(
            "--demo", action="store_true", help="no camera or clip: an animated portrait"
        )
    parser.add_argument("--loop", action="store_true", help="loop --video (and --demo)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")


def _add_sender_options(parser: argparse.ArgumentParser) -> None:
    from talkcodec.config import REDUNDANCY_MODES, SenderConfig
    from talkcodec.transport.fragmentation import DEFAULT_FRAGMENT_BYTES

    parser.add_argument(
        "--simulate-loss", type=float, default=0.0, metavar="P",
        help="drop each keypoint message and each audio packet with probability P before "
        "sending (seeded)",
    )  # fmt: skip
    parser.add_argument("--loss-seed", type=int, default=0, help="seed of --simulate-loss")
    parser.add_argument(
        "--fragment-bytes", type=int, default=DEFAULT_FRAGMENT_BYTES,
        help="largest keyframe-channel message",
    )  # fmt: skip
    parser.add_argument(
        "--bundle-ms", type=float, default=SenderConfig.bundle_ms, metavar="MS",
        help="let a frame's keypoints wait up to MS for the next frames' so they share one "
        "data-channel message (fewer header bytes on the wire, MS more latency; 0: send each "
        "frame at once)",
    )  # fmt: skip
    parser.add_argument(
        "--redundancy", choices=REDUNDANCY_MODES, default=SenderConfig.redundancy,
        help="repeat each keypoint message's packets at the start of the next, so a lost "
        "message costs no frames (auto: while the receiver reports loss)",
    )  # fmt: skip
    _add_rate_options(parser)


def _add_rate_options(parser: argparse.ArgumentParser) -> None:
    """Rate adaptation, and the modelled bottleneck to try it on (talkcodec.transport.link)."""
    from talkcodec.transport.link import LinkConfig

    parser.add_argument(
        "--no-rate-adaptation", action="store_true",
        help="keep the stream's rate whatever the receiver reports (loss, growing delay)",
    )  # fmt: skip
    parser.add_argument(
        "--link-kbps", type=float, default=0.0, metavar="K",
        help="send through a modelled bottleneck of K kbit/s on the wire (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--link-queue-ms", type=float, default=LinkConfig.queue_ms, metavar="MS",
        help="the bottleneck's drop-tail queue, in ms of sending at its rate",
    )  # fmt: skip
    parser.add_argument(
        "--link-loss", type=float, default=0.0, metavar="P",
        help="the bottleneck loses each packet with probability P (reliable ones are resent)",
    )  # fmt: skip
    parser.add_argument("--link-loss-seed", type=int, default=0, help="seed of --link-loss")
    parser.add_argument(
        "--link-delay-ms", type=float, default=0.0, metavar="MS",
        help="the bottleneck's one-way propagation delay",
    )  # fmt: skip
    parser.add_argument(
        "--link-step", action="append", default=[], metavar="AT_S:KBPS",
        help="from AT_S seconds into the call on, the bottleneck carries KBPS (repeatable; "
        "e.g. --link-kbps 64 --link-step 10:8)",
    )  # fmt: skip


def _add_audio_options(parser: argparse.ArgumentParser) -> None:
    from talkcodec.config import AudioConfig

    parser.add_argument(
        "--no-audio", action="store_true",
        help="send no sound (by default: the microphone with --camera, the file's soundtrack "
        "with --video, a synthesised voice with --demo)",
    )  # fmt: skip
    parser.add_argument(
        "--microphone", default=None, metavar="DEVICE",
        help="sound input name or index for --camera (default: the system's default input)",
    )  # fmt: skip
    parser.add_argument(
        "--audio-kbps", type=float, default=AudioConfig.bitrate_kbps, metavar="K",
        help="Opus bitrate (VBR, voip)",
    )  # fmt: skip
    parser.add_argument(
        "--audio-frame-ms", type=int, default=AudioConfig.frame_ms, choices=(10, 20, 40, 60),
        help="audio per RTP packet (longer: fewer header bytes, more latency)",
    )  # fmt: skip


def _add_receiver_options(parser: argparse.ArgumentParser) -> None:
    """The receiver's flags: the decoder's (talkcodec.options) and how it shows the call."""
    from talkcodec.options import add_decoder_options

    add_decoder_options(parser)
    parser.add_argument("--headless", action="store_true", help="never open a window")
    parser.add_argument("--no-overlay", action="store_true", help="no stats over the picture")
    parser.add_argument(
        "--no-refresh-requests", action="store_true",
        help="after a lost keypoint packet wait for the periodic refresh instead of asking",
    )  # fmt: skip


def add_live_commands(commands: argparse._SubParsersAction) -> None:
    from talkcodec.options import add_encoder_options
    from talkcodec.transport.signaling import add_signaling_arguments

    send = commands.add_parser("send", help="live sender: camera or file to a WebRTC peer")
    _add_source_options(send, demo=True)
    add_encoder_options(send)
    _add_sender_options(send)
    _add_audio_options(send)
    add_signaling_arguments(send)
    send.add_argument("--stats", type=Path, default=None, help="write sender stats JSON here")

    receive = commands.add_parser("receive", help="live receiver: show and/or record a call")
    _add_receiver_options(receive)
    receive.add_argument("-o", "--output", type=Path, default=None, help="record to this file")
    receive.add_argument("--stats", type=Path, default=None, help="write stats JSON here")
    add_signaling_arguments(receive)

    call = commands.add_parser(
        "call", help="sender and receiver on loopback: side-by-side video and stats"
    )
    _add_source_options(call, demo=True)
    add_encoder_options(call)
    _add_sender_options(call)
    _add_audio_options(call)
    _add_receiver_options(call)
    call.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_CALL_OUTPUT,
        help="side-by-side video (input | received); stats go beside it as .json",
    )  # fmt: skip
    call.add_argument("--ice-server", action="append", default=[], metavar="URL")


def run_live_command(args: argparse.Namespace) -> None:
    from aiortc.exceptions import InvalidStateError

    from talkcodec.options import encoder_config
    from talkcodec.runtime.demo import DemoUnavailable
    from talkcodec.runtime.sources import CaptureError
    from talkcodec.transport.peer import SignalingError

    try:
        if args.command == "receive":
            _run_receive(args)
        elif args.command == "send":
            _run_send(args, encoder_config(args))
        else:
            _run_call(args, encoder_config(args))
    except (CaptureError, DemoUnavailable, SignalingError, InvalidStateError) as error:
        raise LiveCallError(str(error)) from None
    except ValueError as error:  # a config value out of range
        raise LiveCallError(str(error)) from None


# -- pieces ---------------------------------------------------------------------------------


def warm_up_renderer(
    decoder: DecoderConfig, size_px: int, hybrid: bool = False
) -> RefinerBackend | None:
    """The renderer's inference backend, made before the call so the first keyframe does not
    wait for it (the first use on a machine exports the network to ONNX, seconds; later ones
    load the cached export); the receiver's decoder then renders with this very backend.
    None for renderers without a network. A stream of another size makes its own. hybrid:
    whether the stream will be hybrid (a receiver that does not know yet warms up for the
    default stream)."""
    from talkcodec.generator import renderer_class
    from talkcodec.generator.backends import make_backend

    if renderer_class(decoder.renderer_for(hybrid)).uses_backend:
        return make_backend(decoder.backend, size_px=size_px)
    return None


def _open_source(args: argparse.Namespace, fps: float, default_camera: bool) -> FrameSource:
    """The frame source the flags name; with none, camera 0 (call) or an error (send)."""
    from talkcodec.runtime.sources import ArraySource, CameraSource, VideoFileSource

    if getattr(args, "demo", False):
        from talkcodec.runtime.demo import demo_clip

        clip = demo_clip()
        duration = args.duration
        if duration is None and not args.loop:
            duration = DEFAULT_DEMO_DURATION_S
        source = ArraySource(clip.frames, clip.fps, loop=True, max_duration_s=duration)
        source.demo_mouth_open = clip.mouth_open  # type: ignore[attr-defined]  # its voice's
        return source
    if args.video is not None:
        return VideoFileSource(args.video, fps, loop=args.loop, max_duration_s=args.duration)
    if args.camera is not None:
        return CameraSource(args.camera, max_duration_s=args.duration)
    if not default_camera:
        raise LiveCallError("no input: give --camera N, --video FILE or --demo")
    try:
        return CameraSource(0, max_duration_s=args.duration)
    except Exception as error:
        raise LiveCallError(
            f"no input: {error}; give --video FILE, or --demo for an animated portrait"
        ) from None


def _audio_config(args: argparse.Namespace) -> AudioConfig:
    from talkcodec.config import AudioConfig

    return AudioConfig(
        enabled=not args.no_audio,
        bitrate_kbps=args.audio_kbps,
        frame_ms=args.audio_frame_ms,
        simulate_loss=args.simulate_loss,
        loss_seed=args.loss_seed + 1,
    )


def _open_audio(
    args: argparse.Namespace, source: FrameSource, config: AudioConfig
) -> AudioSource | None:
    """The sound that goes with `source`; None (said in one line) when there is none."""
    from talkcodec.audio.sources import AudioUnavailable, DemoVoice, FileAudio, Microphone

    if not config.enabled:
        return None
    try:
        mouth = getattr(source, "demo_mouth_open", None)
        if mouth is not None:
            return DemoVoice(mouth, source.fps, source)
        if args.video is not None:
            return FileAudio(args.video, source, loop=args.loop)
        return Microphone(args.microphone)
    except AudioUnavailable as error:
        print(f"no audio: {error}")
        return None


def _play_audio(args: argparse.Namespace) -> Callable[[AudioReceiver], None]:
    """What the receiver does with sound: play it on the sound output unless --headless."""
    from talkcodec.audio.sources import AudioUnavailable

    def on_audio(audio: AudioReceiver) -> None:
        if args.headless:
            return
        try:
            audio.add_device()
        except AudioUnavailable as error:
            print(error)

    return on_audio


def _receiver_config(args: argparse.Namespace) -> ReceiverConfig:
    from talkcodec.config import ReceiverConfig
    from talkcodec.options import decoder_config

    return ReceiverConfig(
        decoder=decoder_config(args), request_refresh=not args.no_refresh_requests
    )


def _window_sinks(args: argparse.Namespace, receiver: CallReceiver) -> list[FrameSink]:
    from talkcodec.runtime.sinks import WindowSink, display_available

    if args.headless or not display_available():
        return []
    overlay = None if args.no_overlay else receiver.stats.overlay_lines
    return [WindowSink(overlay, receiver.stop)]


def _write_stats(path: Path, results: dict[str, Any], config: dict[str, Any]) -> None:
    path.write_text(json.dumps({"config": config, **results}, indent=2, default=str) + "\n")


def _config_record(args: argparse.Namespace, **configs: object) -> dict[str, Any]:
    record: dict[str, Any] = {"command_line": sys.argv[1:] or None}
    record.update({name: asdict(value) for name, value in configs.items()})  # type: ignore[call-overload]
    return record


def _print_summary(results: dict[str, Any]) -> None:
    receiver = results.get("receiver")
    if receiver is not None:
        latency = receiver["latency_ms"]
        recovery = receiver["loss_recovery_ms"]
        decoder = receiver.get("decoder", {})

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        print(
            f"received {receiver['frames_displayed']} frames in {receiver['duration_s']:.1f} s: "
            f"{receiver['fps']:.1f} fps, {receiver['payload_kbit_s']:.2f} kbit/s payload, "
            f"{receiver['wire_kbit_s']:.2f} kbit/s on the wire"
        )
        print(
            f"latency capture to display: median {ms(latency['median'])}, "
            f"p95 {ms(latency['p95'])}; lost {decoder.get('lost_packets', 0)}, "
            f"late {decoder.get('late_packets', 0)} packets; loss recovery "
            f"median {ms(recovery['median'])}, max {ms(recovery['max'])} "
            f"over {recovery['events']} events"
        )
    sender = results.get("sender")
    if sender is not None:
        print(
            f"sent {sender['frames_encoded']} frames "
            f"({sender['frames_dropped_at_capture']} dropped at capture, "
            f"{sender['frames_without_face']} without a face), keyframes {sender['keyframes']}, "
            f"encode median {sender['encode_ms']['median'] or 0:.1f} ms"
        )
    _print_audio_summary(results)


def _print_audio_summary(results: dict[str, Any]) -> None:
    receiver = results.get("receiver") or {}
    audio = receiver.get("audio")
    if audio is not None:
        offset = receiver["av_offset_ms"]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:+.0f} ms"

        print(
            f"audio: {audio['packets_received']} packets ({audio['packets_lost']} lost), "
            f"{audio['kbit_s']:.2f} kbit/s payload, {audio['wire_kbit_s']:.2f} on the wire, "
            f"{audio['concealed_ms']:.0f} ms concealed; A/V offset median {ms(offset['median'])}"
            f" (p5 {ms(offset['p5'])}, p95 {ms(offset['p95'])}; + = sound leads)"
        )
    elif "sender" in results and (results["sender"] or {}).get("audio") is None:
        print("audio: none sent")


# -- commands -------------------------------------------------------------------------------


def _sender_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from talkcodec.config import SenderConfig

    return SenderConfig(
        simulate_loss=args.simulate_loss,
        loss_seed=args.loss_seed,
        fragment_bytes=args.fragment_bytes,
        bundle_ms=args.bundle_ms,
        redundancy=args.redundancy,
        adapt_rate=not args.no_rate_adaptation,
        link=_link_config(args),
    )


def _link_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from talkcodec.transport.link import LinkConfig, RateStep

    if not args.link_kbps:
        if args.link_step or args.link_loss:
            raise LiveCallError("--link-step and --link-loss need --link-kbps")
        return None
    return LinkConfig(
        rate_kbps=args.link_kbps,
        queue_ms=args.link_queue_ms,
        loss=args.link_loss,
        loss_seed=args.link_loss_seed,
        delay_ms=args.link_delay_ms,
        steps=tuple(RateStep.parse(step) for step in args.link_step),
    )


def _run_send(args: argparse.Namespace, config: EncoderConfig) -> None:
    from talkcodec.codec import StreamEncoder
    from talkcodec.runtime.call import send_call
    from talkcodec.transport.signaling import create_signaling

    sender_config = _sender_config(args)
    audio_config = _audio_config(args)
    source = _open_source(args, config.fps, default_camera=False)
    audio_source = _open_audio(args, source, audio_config)
    encoder = StreamEncoder(config)
    try:
        results = asyncio.run(
            send_call(
                encoder,
                source,
                create_signaling(args),
                sender_config,
                ice_servers=args.ice_server,
                audio_source=audio_source,
                audio_config=audio_config,
            )
        )
    finally:
        encoder.close()
    _print_summary(results)
    if args.stats is not None:
        record = _config_record(args, encoder=config, sender=sender_config, audio=audio_config)
        _write_stats(args.stats, results, record)


def _run_receive(args: argparse.Namespace) -> None:
    from talkcodec.config import EncoderConfig
    from talkcodec.runtime.call import receive_call
    from talkcodec.runtime.sinks import RecordSink
    from talkcodec.transport.signaling import create_signaling

    receiver_config = _receiver_config(args)
    # Before the header says, warm up for what a sender sends by default (a hybrid stream).
    backend = warm_up_renderer(
        receiver_config.decoder, EncoderConfig.size_px, EncoderConfig.lowres_px > 0
    )

    def sinks(receiver: CallReceiver) -> list[FrameSink]:
        chosen = _window_sinks(args, receiver)
        if args.output is not None:
            overlay = None if args.no_overlay else receiver.stats.overlay_lines

            def fps() -> float:
                return receiver.decoder.header.fps if receiver.decoder else 25.0

            chosen.append(RecordSink(args.output, fps, overlay, audio=receiver.audio is not None))
        return chosen

    results = asyncio.run(
        receive_call(
            create_signaling(args),
            receiver_config,
            sinks,
            ice_servers=args.ice_server,
            backend=backend,
            on_audio=_play_audio(args),
        )
    )
    _print_summary(results)
    if args.stats is not None:
        _write_stats(args.stats, results, _config_record(args, receiver=receiver_config))


def _run_call(args: argparse.Namespace, config: EncoderConfig) -> None:
    from talkcodec.codec import StreamEncoder
    from talkcodec.runtime.call import loopback_call
    from talkcodec.runtime.sinks import InputFrames

    sender_config = _sender_config(args)
    receiver_config = _receiver_config(args)
    audio_config = _audio_config(args)
    backend = warm_up_renderer(receiver_config.decoder, config.size_px, config.lowres_px > 0)
    source = _open_source(args, config.fps, default_camera=True)
    audio_source = _open_audio(args, source, audio_config)
    inputs = InputFrames()
    encoder = StreamEncoder(config)
    try:
        results = asyncio.run(
            loopback_call(
                encoder,
                source,
                sender_config,
                receiver_config,
                sinks=lambda receiver: _call_sinks(args, receiver, inputs, config),
                on_encoded=inputs.add,
                ice_servers=args.ice_server,
                backend=backend,
                audio_source=audio_source,
                audio_config=audio_config,
                on_audio=_play_audio(args),
            )
        )
    finally:
        encoder.close()
    stats_path = args.output.with_suffix(".json")
    record = _config_record(
        args, encoder=config, sender=sender_config, receiver=receiver_config, audio=audio_config
    )
    _write_stats(stats_path, results, record)
    _print_summary(results)
    print(f"wrote {args.output} (input | received) and {stats_path}")


def _call_sinks(
    args: argparse.Namespace, receiver: CallReceiver, inputs: InputFrames, config: EncoderConfig
) -> list[FrameSink]:
    from talkcodec.runtime.sinks import SideBySideSink

    overlay = None if args.no_overlay else receiver.stats.overlay_lines
    side_by_side = SideBySideSink(
        args.output, inputs, config.size_px, config.fps, overlay, audio=receiver.audio is not None
    )
    return [*_window_sinks(args, receiver), side_by_side]
