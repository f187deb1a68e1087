"""Audio: sources on the video's timeline, Opus packets stamped with the media clock, the
receiver's lip-synchronised playout and concealment (synthetic timestamps), the recording's
sound track, and the audio-clock control message."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from talkcodec.audio.playout import MAX_CONCEAL_MS, AudioPlayout
from talkcodec.audio.receive import AudioPacketBuffer, to_mono
from talkcodec.audio.sources import (
    SAMPLE_RATE,
    AudioUnavailable,
    DemoVoice,
    FileAudio,
    TimelineSource,
    decode_soundtrack,
)
from talkcodec.audio.track import OpusTrack
from talkcodec.bitstream import BitstreamError
from talkcodec.config import AudioConfig
from talkcodec.runtime.sinks import _TimedWriter
from talkcodec.transport.control import AudioClock, parse_control
from talkcodec.transport.overhead import RTP_AUDIO_PACKET_OVERHEAD_BYTES, rtp_audio_packet_cost

CLICK_EVERY = SAMPLE_RATE // 5  # a click every 200 ms of the timeline


@dataclass
class FakeAnchor:
    """Stands in for a video source: where its timeline started, its rate, its loop."""

    origin_wall_ms: float | None
    fps: float = 25.0
    pass_frames: int | None = None


class Clicks(TimelineSource):
    """A short click at every multiple of CLICK_EVERY timeline samples."""

    def samples(self, start: int, count: int) -> np.ndarray:
        index = np.arange(start, start + count)
        return np.where(index % CLICK_EVERY < 24, 20000, 0).astype(np.int16)


def _onsets(pcm: np.ndarray) -> list[int]:
    """Sample indices where loud sound starts after at least 50 ms of quiet."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.float32)) > 4000)
    return [int(i) for n, i in enumerate(loud) if n == 0 or i - loud[n - 1] > SAMPLE_RATE // 20]


def test_decoded_samples_sit_at_the_announced_clock_time() -> None:
    """Encode clicks through the track, decode as aiortc does (libopus, from pts 0): a click
    decoded at pts p is at clock_origin + p/48 ms, which is where the timeline put it."""
    import time

    anchor = FakeAnchor(origin_wall_ms=time.time() * 1000 - 1000.0)
    config = AudioConfig(frame_ms=20)
    track = OpusTrack(Clicks(anchor), config)  # type: ignore[arg-type]
    announced: list[float] = []
    track.on_clock = announced.append

    async def packets() -> list[av.Packet]:
        return [await track.recv() for _ in range(30)]

    sent = asyncio.run(packets())
    assert [p.pts for p in sent] == [i * 960 for i in range(30)]
    assert announced == [track.clock_origin_ms]
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "stereo", SAMPLE_RATE  # aiortc's
    decoded = np.concatenate([to_mono(f) for p in sent for f in decoder.decode(p)])
    onsets = _onsets(decoded)
    assert len(onsets) >= 2
    for onset in onsets:
        clock_ms = announced[0] + onset * 1000 / SAMPLE_RATE
        timeline_sample = (clock_ms - anchor.origin_wall_ms) * SAMPLE_RATE / 1000
        nearest = round(timeline_sample / CLICK_EVERY) * CLICK_EVERY
        # Within 3 ms (the codec smears a click by ~1 ms; its lookahead alone is 6.5 ms).
        assert abs(timeline_sample - nearest) < 3 * SAMPLE_RATE / 1000


def test_simulated_loss_drops_packets_but_never_the_first() -> None:
    import time

    anchor = FakeAnchor(origin_wall_ms=time.time() * 1000)
    track = OpusTrack(Clicks(anchor), AudioConfig(frame_ms=10, simulate_loss=0.5, loss_seed=3))  # type: ignore[arg-type]

    async def packets() -> list[av.Packet]:
        return [await track.recv() for _ in range(20)]

    sent = asyncio.run(packets())
    assert sent[0].pts == 0
    assert track.stats.simulated_losses > 5
    assert track.stats.packets_sent == 20
    assert sent[-1].pts == (20 + track.stats.simulated_losses - 1) * 480


FRAME = 1920  # 40 ms


def _tone(k: int) -> np.ndarray:
    return np.full(FRAME, 1000 + k, np.int16)


class PlayoutRig:
    """Feeds an AudioPlayout frames of 40 ms on a synthetic clock: frame k's first sample is
    at media time ORIGIN + 40 k and it arrives `arrival_ms` later; pictures show at
    `video_latency_ms`. Records what plays."""

    ORIGIN = 1_000_000.0

    def __init__(self, arrival_ms: float = 30.0, video_latency_ms: float = 90.0) -> None:
        self.played: list[tuple[float, int, float]] = []  # (now, first sample, media ms)
        self.now = self.ORIGIN
        self.playout = AudioPlayout([self._sink])
        self.playout.set_clock(int(self.ORIGIN), self.now)
        self.arrival_ms = arrival_ms
        self.video_latency_ms = video_latency_ms

    def _sink(self, samples: np.ndarray, media_ms: float) -> None:
        self.played.append((self.now, int(samples[0]), media_ms))

    def run(
        self,
        frames: int,
        skip: set[int] = frozenset(),  # type: ignore[assignment]
        late: dict[int, float] = {},  # noqa: B006
        video: dict[int, float] = {},  # noqa: B006  # picture latency from frame k on
    ) -> None:
        arrivals = {
            k: self.ORIGIN + 40 * k + self.arrival_ms + late.get(k, 0.0)
            for k in range(frames)
            if k not in skip
        }
        end = self.ORIGIN + 40 * frames + 400
        while self.now < end:
            for k in sorted(k for k, t in arrivals.items() if t <= self.now):
                self.playout.push(k * FRAME, _tone(k), self.now)
                del arrivals[k]
            if (self.now - self.ORIGIN) % 40 == 0:
                k = int((self.now - self.ORIGIN) // 40)
                self.video_latency_ms = video.get(k, self.video_latency_ms)
                self.playout.note_video(self.video_latency_ms)
            self.playout.tick(self.now)
            self.now += 5


def test_audio_waits_for_the_slower_picture_and_the_offset_is_measured() -> None:
    rig = PlayoutRig(arrival_ms=30.0, video_latency_ms=90.0)
    rig.run(150)
    assert rig.playout.stats.frames_played == 150
    # The frames (not the concealment after the last) play at the picture's latency.
    delays = [now - media for now, first, media in rig.played if first >= 1000]
    assert len(delays) == 150 and all(90 <= d < 95 for d in delays)
    offsets = rig.playout.stats.offsets_ms[-20:]
    assert all(abs(o) <= 10 for o in offsets)
    assert rig.playout.stats.concealed_ms == 0


def test_a_step_in_the_picture_latency_is_followed_at_once_one_late_picture_is_not() -> None:
    """The picture's latency steps from 90 to 170 ms (its playout began to wait for recovered
    frames): the sound's delay jumps after 3 such pictures instead of slewing for 1.6 s. One
    late picture (a slow render) moves it by no more than the slew."""
    rig = PlayoutRig(arrival_ms=30.0, video_latency_ms=90.0)
    rig.run(150, video={40: 150.0, 41: 90.0, 80: 170.0})
    stats = rig.playout.stats
    assert stats.delay_jumps == 1
    offsets = np.array(stats.offsets_ms)  # one per picture once sound plays
    # the late picture itself, then the 3 of the step before the jump and the 2 it took to
    # play out: beyond BT.1359's +45 ms; every other within the 5 ms of a playout tick
    assert np.sum(offsets > 45) <= 6
    assert np.sum(np.abs(offsets) > 10) <= 6
    assert np.all(np.abs(offsets[-50:]) <= 10)


def test_audio_is_not_held_beyond_the_cap_and_the_offset_says_so() -> None:
    rig = PlayoutRig(arrival_ms=30.0, video_latency_ms=900.0)
    rig.run(150)
    delays = [now - media for now, first, media in rig.played[-10:] if first >= 1000]
    assert all(delay <= 400 + 10 for delay in delays)
    assert rig.playout.stats.offsets_ms[-1] > 400  # sound ahead of the picture: reported


def test_a_lost_frame_is_concealed_and_its_late_copy_dropped() -> None:
    rig = PlayoutRig()
    rig.run(60, late={30: 500.0})  # frame 30 comes half a second late
    stats = rig.playout.stats
    assert stats.concealed_ms == pytest.approx(40.0)
    assert stats.late_frames == 1
    assert stats.frames_played == 59
    # The concealment repeats the last good frame, quieter.
    concealed = [first for _, first, media in rig.played if media == rig.ORIGIN + 40 * 30]
    assert len(concealed) == 1 and 0 < concealed[0] < 1000 + 29


def test_a_long_gap_pauses_instead_of_concealing_forever() -> None:
    rig = PlayoutRig()
    rig.run(100, skip=set(range(20, 60)))  # 1.6 s without sound
    stats = rig.playout.stats
    assert stats.concealed_ms == 0
    assert stats.paused_ms >= 1600 - MAX_CONCEAL_MS
    assert stats.frames_played == 60
    media = [m for _, _, m in rig.played]
    assert media == sorted(media)  # the timeline resumed in order


def test_packet_buffer_passes_packets_at_once_and_drops_those_behind() -> None:
    buffer = AudioPacketBuffer()
    released = []
    for seq in (10, 11, 13, 12, 14):
        packet = RtpPacket(sequence_number=seq, timestamp=seq * 960)
        packet._data = bytes([seq])  # type: ignore[attr-defined]
        _, frame = buffer.add(packet)
        released.append(None if frame is None else frame.timestamp // 960)
    assert released == [10, 11, 13, None, 14]
    assert (buffer.counts.packets, buffer.counts.lost, buffer.counts.behind) == (4, 1, 1)


def test_audio_rtp_overhead_matches_what_aiortc_serialises() -> None:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=2, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                ),
            ]
        )
    )
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0)
    packet.payload = bytes(37)
    packet.extensions.mid = "0"
    rtp_bytes = len(packet.serialize(extensions))
    srtp_udp_ip = 10 + 8 + 20
    assert rtp_audio_packet_cost(37).wire_bytes == rtp_bytes + srtp_udp_ip
    assert RTP_AUDIO_PACKET_OVERHEAD_BYTES == 58


def test_audio_clock_round_trip_and_errors() -> None:
    message = AudioClock(0xFFFF_FFFE)
    assert bytes(message) == b"\x05\xff\xff\xff\xfe"
    assert parse_control(bytes(message)) == message
    assert parse_control(bytes.fromhex("05000186a0")) == AudioClock(100_000)  # docs example
    with pytest.raises(BitstreamError, match=r"^audio clock needs exactly 5 bytes, got 4$"):
        parse_control(b"\x05\x00\x00\x00")


def test_recording_places_sound_on_the_picture_timeline(tmp_path: Path) -> None:
    path = tmp_path / "call.mp4"
    writer = _TimedWriter(path, 64, 64, 25.0, audio=True)
    image = np.zeros((64, 64, 3), np.uint8)
    first_pts = 5_000
    writer.write_audio(np.full(960, 5000, np.int16), first_pts - 100.0)  # before: not kept
    writer.write(image, first_pts)
    # 1 s of sound starting 200 ms into the picture, with a 100 ms hole in it.
    writer.write_audio(np.full(SAMPLE_RATE // 2, 8000, np.int16), first_pts + 200.0)
    writer.write_audio(np.full(SAMPLE_RATE * 4 // 10, 8000, np.int16), first_pts + 800.0)
    for k in range(1, 30):
        writer.write(image, first_pts + 40 * k)
    writer.close()
    with av.open(str(path)) as container:
        audio = np.concatenate(
            [f.to_ndarray().reshape(-1) for f in container.decode(container.streams.audio[0])]
        )
    loud = np.abs(audio) > 0.1
    start = np.flatnonzero(loud)[0] / SAMPLE_RATE
    assert start == pytest.approx(0.2, abs=0.03)  # AAC adds a little priming delay
    hole = loud[int(0.72 * SAMPLE_RATE) : int(0.78 * SAMPLE_RATE)]
    assert not hole.any()
    assert len(audio) / SAMPLE_RATE == pytest.approx(1.2, abs=0.06)


def test_soundtrack_is_decoded_and_a_silent_file_says_so(tmp_path: Path) -> None:
    with_sound, silent = tmp_path / "sound.mp4", tmp_path / "silent.mp4"
    for path, sound in ((with_sound, True), (silent, False)):
        with av.open(str(path), "w") as container:
            video = container.add_stream("libx264", rate=25)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
            audio = container.add_stream("aac", rate=44100, layout="stereo") if sound else None
            for _ in range(25):
                frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), "rgb24")
                container.mux(video.encode(frame))
            if audio is not None:
                tone = (np.sin(np.arange(44100) / 44100 * 2 * np.pi * 440) * 8000).astype(np.int16)
                for start in range(0, 44100, 1024):
                    block = np.repeat(tone[None, start : start + 1024], 2, axis=0)
                    frame = av.AudioFrame.from_ndarray(
                        block.T.reshape(1, -1).copy(), format="s16", layout="stereo"
                    )
                    frame.sample_rate, frame.pts = 44100, start
                    container.mux(audio.encode(frame))
                container.mux(audio.encode())
            container.mux(video.encode())
    pcm = decode_soundtrack(with_sound)
    assert len(pcm) / SAMPLE_RATE == pytest.approx(1.0, abs=0.06)
    anchor = FakeAnchor(origin_wall_ms=0.0, pass_frames=25)
    looped = FileAudio(with_sound, anchor, loop=True)  # type: ignore[arg-type]
    assert np.array_equal(looped.samples(SAMPLE_RATE, 100), looped.samples(0, 100))
    once = FileAudio(with_sound, anchor, loop=False)  # type: ignore[arg-type]
    assert once.samples(len(pcm), 100) is None
    with pytest.raises(AudioUnavailable, match=r"silent\.mp4 has no soundtrack"):
        decode_soundtrack(silent)


def test_demo_voice_speaks_only_with_an_open_mouth() -> None:
    fps = 25.0
    mouth = np.array([0.0] * 25 + [0.1] * 25)  # closed for a second, then open
    voice = DemoVoice(mouth, fps, FakeAnchor(origin_wall_ms=0.0))  # type: ignore[arg-type]
    closed = voice.samples(0, SAMPLE_RATE // 2)
    open_ = voice.samples(SAMPLE_RATE + SAMPLE_RATE // 4, SAMPLE_RATE // 2)
    assert np.abs(closed).max() == 0
    assert np.sqrt(np.mean(open_.astype(np.float64) ** 2)) > 500
    # Made in pieces or at once, the signal is the same (closed form in time).
    whole = voice.samples(SAMPLE_RATE, 960 * 4)
    pieces = np.concatenate([voice.samples(SAMPLE_RATE + 960 * i, 960) for i in range(4)])
    assert np.array_equal(whole, pieces)


def test_microphone_without_portaudio_says_so_in_one_line() -> None:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        pass
    else:
        pytest.skip("sounddevice is installed here: the missing-library path cannot be seen")
    from talkcodec.audio.sources import Microphone

    with pytest.raises(AudioUnavailable, match=r"^no microphone: sounddevice/PortAudio") as error:
        Microphone()
    assert "\n" not in str(error.value)
