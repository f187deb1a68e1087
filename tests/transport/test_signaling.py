"""Signaling with a shared secret: peers that prove it pair and swap session descriptions, over
the relay (peers/signaling_server.py) and over tcp/unix sockets; a wrong secret, a wrong or
full room, malformed or oversized lines, floods and idle peers are refused in one line, and the
relay or the listening peer goes on serving. All on 127.0.0.1, ephemeral ports, bounded waits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from aiortc import RTCSessionDescription
from aiortc.contrib.signaling import BYE, BaseSignaling, TcpSocketSignaling

from talkcodec.transport.peer import (
    SignalingError,
    answer,
    create_channels,
    make_peer_connection,
    offer,
)
from talkcodec.transport.signaling import (
    MAX_LINE_BYTES,
    ProtocolError,
    RelaySignaling,
    SignalingLimits,
    TcpSignaling,
    UnixSignaling,
    add_signaling_arguments,
    create_signaling,
    handshake_proof,
    read_line,
    resolve_secret,
)


def _load_relay() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "peers" / "signaling_server.py"
    spec = importlib.util.spec_from_file_location("signaling_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


relay_server = _load_relay()

HOST = "127.0.0.1"
SECRET = b"correct horse battery staple"
OFFER = RTCSessionDescription(sdp="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=offer\r\n", type="offer")
ANSWER = RTCSessionDescription(sdp="v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=answer\r\n", type="answer")
T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def running_relay(
    secret: bytes | None = SECRET, **limits: float
) -> AsyncIterator[tuple[Any, int]]:
    """A relay on an ephemeral port: (relay, port)."""
    relay = relay_server.Relay(secret, relay_server.RelayLimits(**limits))
    server = await relay_server.start_relay(relay, HOST, 0)
    try:
        yield relay, server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _receive_retrying(signaling: BaseSignaling) -> object:
    """As peer.answer does: keep connecting while the listener is not up yet."""
    for _ in range(100):
        try:
            return await signaling.receive()
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("the listener never came up")


async def _exchange(offering: BaseSignaling, answering: BaseSignaling) -> None:
    """The offer goes one way and the answer the other, both intact. (A listening side's send
    waits for the other side to connect.)"""
    sending = asyncio.create_task(offering.send(OFFER))
    assert await _receive_retrying(answering) == OFFER
    await sending
    await answering.send(ANSWER)
    assert await offering.receive() == ANSWER


def _relay_peer(port: int, room: str = "desk") -> RelaySignaling:
    return RelaySignaling(HOST, port, room, SECRET)


async def _read_json(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next line as JSON; None at the end of the stream (or a reset)."""
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    except ConnectionResetError:
        return None
    return json.loads(line) if line else None


async def _raw_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, room: str, secret: bytes
) -> dict[str, Any] | None:
    """A client handshake written by hand; the server's reply."""
    challenge = await _read_json(reader)
    assert challenge is not None
    nonce = "ab" * 16
    auth = handshake_proof(secret, "client", room, challenge["nonce"], nonce)
    hello = {"talkcodec": 1, "room": room, "nonce": nonce, "auth": auth}
    writer.write(json.dumps(hello).encode() + b"\n")
    return await _read_json(reader)


async def _until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def _close_all(*signalings: BaseSignaling) -> None:
    for signaling in signalings:
        await signaling.close()


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


# -- the wire ---------------------------------------------------------------------------------


def test_proof_is_the_documented_hmac_and_both_sides_agree() -> None:
    """HMAC-SHA256(secret, "talkcodec/1|client|desk|000...0|111...1"), as docs/signaling.md."""
    args = ("client", "desk", "0" * 32, "1" * 32)
    golden = "43bec44bbebdead1211d7c4a6422ec7ccbfcfd20733ac789796fdc7f3e574726"
    assert handshake_proof(SECRET, *args) == relay_server.proof(SECRET, *args) == golden
    assert handshake_proof(SECRET, "server", *args[1:]) != golden


@pytest.mark.parametrize("module", ["client", "relay"])
def test_line_bound_is_exact(module: str) -> None:
    async def read(data: bytes) -> bytes | None:
        reader = asyncio.StreamReader(limit=16)
        reader.feed_data(data)
        reader.feed_eof()
        if module == "client":
            return await read_line(reader, 16)
        return await relay_server.read_line(reader, 16)

    error = ProtocolError if module == "client" else relay_server.RelayError
    assert _run(read(b"x" * 15 + b"\n")) == b"x" * 15 + b"\n"
    assert _run(read(b"")) is None
    with pytest.raises(error, match=r"^line longer than 16 bytes$"):
        _run(read(b"x" * 16 + b"\n"))
    with pytest.raises(error, match=r"^line longer than 16 bytes$"):
        _run(read(b"x" * 40 + b"\n"))
    with pytest.raises(error, match=r"^line of 3 bytes ends without a newline$"):
        _run(read(b"abc"))


# -- the relay --------------------------------------------------------------------------------


def test_relay_pairs_peers_that_prove_the_secret() -> None:
    async def scenario() -> None:
        async with running_relay() as (relay, port):
            sender = RelaySignaling(HOST, port, "desk", SECRET)
            receiver = RelaySignaling(HOST, port, "desk", SECRET)
            await _exchange(sender, receiver)
            assert relay.connections == 2
            await _close_all(sender, receiver)
            await _until(lambda: relay.connections == 0)

    _run(scenario())


def test_relay_carries_a_real_offer_and_answer() -> None:
    async def scenario() -> None:
        async with running_relay() as (_, port):
            sender_pc, receiver_pc = make_peer_connection(), make_peer_connection()
            create_channels(sender_pc)
            sender = RelaySignaling(HOST, port, "desk", SECRET)
            receiver = RelaySignaling(HOST, port, "desk", SECRET)
            try:
                await asyncio.gather(offer(sender_pc, sender), answer(receiver_pc, receiver, 10))
                assert receiver_pc.remoteDescription.type == "offer"
                assert sender_pc.remoteDescription.type == "answer"
                assert "webrtc-datachannel" in receiver_pc.remoteDescription.sdp
            finally:
                await _close_all(sender, receiver)
                await sender_pc.close()
                await receiver_pc.close()

    _run(scenario())


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (b"wrong", "signaling refused by relay 127.0.0.1:{port}: wrong secret"),
        (
            None,
            "signaling refused by relay 127.0.0.1:{port}: "
            "a secret is needed: set --secret or TALKCODEC_SECRET",
        ),
    ],
)
def test_relay_refuses_a_wrong_or_missing_secret_and_keeps_serving(
    secret: bytes | None, message: str
) -> None:
    async def scenario() -> None:
        async with running_relay() as (relay, port):
            intruder = RelaySignaling(HOST, port, "desk", secret)
            with pytest.raises(SignalingError) as refused:
                await intruder.connect()
            assert str(refused.value) == message.format(port=port)
            await _until(lambda: relay.connections == 0)
            await _exchange(
                RelaySignaling(HOST, port, "desk", SECRET),
                RelaySignaling(HOST, port, "desk", SECRET),
            )

    _run(scenario())


def test_a_replayed_handshake_is_refused() -> None:
    """A captured Hello answers one challenge only: the next connection gets a new nonce."""

    async def scenario() -> None:
        async with running_relay() as (_, port):
            reader, writer = await asyncio.open_connection(HOST, port)
            challenge = await _read_json(reader)
            assert challenge is not None
            nonce = "cd" * 16
            auth = handshake_proof(SECRET, "client", "desk", challenge["nonce"], nonce)
            captured = json.dumps({"talkcodec": 1, "room": "desk", "nonce": nonce, "auth": auth})
            writer.close()
            reader, writer = await asyncio.open_connection(HOST, port)
            assert await _read_json(reader) is not None  # a fresh challenge
            writer.write(captured.encode() + b"\n")
            assert await _read_json(reader) == {"talkcodec": 1, "error": "wrong secret"}
            assert await _read_json(reader) is None
            writer.close()

    _run(scenario())


def test_insecure_relay_pairs_peers_without_secret_and_a_peer_with_one_refuses_it() -> None:
    async def scenario() -> None:
        async with running_relay(secret=None) as (_, port):
            await _exchange(RelaySignaling(HOST, port, "desk"), RelaySignaling(HOST, port, "desk"))
            careful = RelaySignaling(HOST, port, "other", SECRET)
            with pytest.raises(SignalingError) as refused:
                await careful.connect()
            assert str(refused.value) == (
                f"relay 127.0.0.1:{port} runs without a secret (--insecure); "
                "refusing it with a secret"
            )

    _run(scenario())


def test_relay_keeps_rooms_apart() -> None:
    async def scenario() -> None:
        async with running_relay() as (_, port):
            sender = RelaySignaling(HOST, port, "room-1", SECRET)
            elsewhere = RelaySignaling(HOST, port, "room-2", SECRET)
            receiver = RelaySignaling(HOST, port, "room-1", SECRET)
            await sender.connect()
            await elsewhere.connect()
            await sender.send(OFFER)
            assert await receiver.receive() == OFFER
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(elsewhere.receive(), 0.3)
            await _close_all(sender, elsewhere, receiver)

    _run(scenario())


def test_third_peer_in_a_room_is_refused() -> None:
    async def scenario() -> None:
        async with running_relay() as (_, port):
            sender = RelaySignaling(HOST, port, "desk", SECRET)
            receiver = RelaySignaling(HOST, port, "desk", SECRET)
            await sender.connect()
            await receiver.connect()
            third = RelaySignaling(HOST, port, "desk", SECRET)
            with pytest.raises(SignalingError) as refused:
                await third.connect()
            assert str(refused.value) == (
                f"signaling refused by relay 127.0.0.1:{port}: room 'desk' is full (2 peers)"
            )
            await _exchange(sender, receiver)  # the pair is untouched

    _run(scenario())


NONCE = "ef" * 16


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x00\xff\xfe\x80 binary\n", "line is not UTF-8"),
        (b"not json at all\n", "line is not JSON"),
        (b"[" * 5000 + b"\n", "line is not JSON"),
        (b"[1, 2]\n", "line is not a JSON object"),
        (
            b'{"type": "offer", "sdp": "v=0"}\n',
            'expected a talkcodec handshake line, got one without "talkcodec"',
        ),
        (b'{"talkcodec": 2}\n', "expected talkcodec handshake version 1, got 2"),
        (b'{"talkcodec": true}\n', "expected talkcodec handshake version 1, got True"),
        (
            b'{"talkcodec": 1, "room": "a b", "nonce": "' + NONCE.encode() + b'"}\n',
            "room must be 1 to 64 of A-Z a-z 0-9 . _ -, got 'a b'",
        ),
        (
            b'{"talkcodec": 1, "room": "desk", "nonce": "xyz"}\n',
            "nonce must be 32 lowercase hex digits, got 'xyz'",
        ),
        (
            b'{"talkcodec": 1, "room": "desk", "nonce": "' + NONCE.encode() + b'", "auth": 7}\n',
            "auth must be 64 lowercase hex digits, got 7",
        ),
        (b'{"talkcodec": 1', "line of 15 bytes ends without a newline"),
    ],
)
def test_relay_closes_a_malformed_connection_only(
    garbage: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with running_relay() as (relay, port):
            waiting = RelaySignaling(HOST, port, "desk", SECRET)
            await waiting.connect()
            reader, writer = await asyncio.open_connection(HOST, port)
            assert await _read_json(reader) is not None
            writer.write(garbage)
            if not garbage.endswith(b"\n"):
                writer.write_eof()
            assert await _read_json(reader) == {"talkcodec": 1, "error": reason}
            assert await _read_json(reader) is None
            writer.close()
            await _until(lambda: relay.connections == 1)
            await _exchange(waiting, RelaySignaling(HOST, port, "desk", SECRET))

    with caplog.at_level(logging.INFO):
        _run(scenario())
    assert any(r.getMessage().endswith(f": {reason}") for r in caplog.records)
    _no_tracebacks(caplog)


def test_relay_closes_an_oversized_line(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_relay() as (relay, port):
            reader, writer = await asyncio.open_connection(HOST, port)
            assert await _read_json(reader) is not None
            writer.write(b"x" * (3 * MAX_LINE_BYTES) + b"\n")
            while await _read_json_or_error(reader) is not None:
                pass  # the refusal may be lost to the reset that unread bytes cause
            writer.close()
            await _until(lambda: relay.connections == 0)
            await _exchange(
                RelaySignaling(HOST, port, "desk", SECRET),
                RelaySignaling(HOST, port, "desk", SECRET),
            )

    with caplog.at_level(logging.INFO):
        _run(scenario())
    assert any(r.getMessage().endswith(": line longer than 65536 bytes") for r in caplog.records)
    _no_tracebacks(caplog)


async def _read_json_or_error(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    message = await _read_json(reader)
    assert message in (None, {"talkcodec": 1, "error": "line longer than 65536 bytes"})
    return message


def test_relay_drops_a_paired_peer_that_sends_garbage_and_its_partner() -> None:
    async def scenario() -> None:
        async with running_relay() as (relay, port):
            honest = RelaySignaling(HOST, port, "desk", SECRET)
            await honest.connect()
            reader, writer = await asyncio.open_connection(HOST, port)
            welcome = await _raw_handshake(reader, writer, "desk", SECRET)
            assert welcome is not None and set(welcome) == {"talkcodec", "auth"}
            writer.write(b'{"talkcodec": 1, "error": "spoofed"}\n')
            assert await _read_json(reader) == {
                "talkcodec": 1,
                "error": "expected a signaling message, got type None",
            }
            assert await honest.receive() is None  # the pairing is over
            writer.close()
            await _until(lambda: relay.connections == 0)

    _run(scenario())


def test_relay_bounds_connections_and_serves_after_a_flood() -> None:
    async def scenario() -> None:
        async with running_relay(max_connections=16) as (relay, port):
            flood = await asyncio.gather(*(asyncio.open_connection(HOST, port) for _ in range(200)))
            first_lines = await asyncio.gather(*(_read_json(reader) for reader, _ in flood))
            admitted = [line for line in first_lines if line is not None and "nonce" in line]
            full = {"talkcodec": 1, "error": "the relay is full (16 connections)"}
            assert len(admitted) == 16
            assert first_lines.count(full) == 200 - 16
            assert relay.connections == 16
            for _, writer in flood:
                writer.close()
            await _until(lambda: relay.connections == 0)
            await _exchange(
                RelaySignaling(HOST, port, "desk", SECRET),
                RelaySignaling(HOST, port, "desk", SECRET),
            )

    _run(scenario())


def test_relay_times_out_silent_and_idle_peers() -> None:
    async def scenario() -> None:
        async with running_relay(handshake_timeout_s=0.2, idle_timeout_s=0.3) as (relay, port):
            reader, writer = await asyncio.open_connection(HOST, port)
            assert await _read_json(reader) is not None
            assert await _read_json(reader) == {
                "talkcodec": 1,
                "error": "no handshake within 0.2 s",
            }
            writer.close()
            idle = RelaySignaling(HOST, port, "desk", SECRET)
            with pytest.raises(SignalingError) as closed:
                await idle.receive()
            assert str(closed.value) == (
                f"relay 127.0.0.1:{port} closed the signaling connection: idle for 0.3 s"
            )
            await _until(lambda: relay.connections == 0)

    _run(scenario())


def test_relay_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TALKCODEC_SECRET", raising=False)
    with pytest.raises(SystemExit):
        relay_server.parse_args([])
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(
            "error: no secret: give --secret or set TALKCODEC_SECRET (or run with --insecure)"
        )
    )
    assert relay_server.parse_args(["--insecure"]).secret is None
    monkeypatch.setenv("TALKCODEC_SECRET", "from-env")
    assert relay_server.parse_args([]).secret == b"from-env"
    assert relay_server.parse_args(["--secret", "flag"]).secret == b"flag"


# -- tcp and unix sockets ---------------------------------------------------------------------


def test_tcp_pairs_peers_that_prove_the_secret() -> None:
    port = _free_port()

    async def scenario() -> None:
        sender = TcpSignaling(HOST, port, "desk", SECRET)
        receiver = TcpSignaling(HOST, port, "desk", SECRET)
        try:
            await _exchange(sender, receiver)
        finally:
            await _close_all(sender, receiver)

    _run(scenario())


def test_tcp_carries_a_real_offer_and_answer_when_the_receiver_starts_first() -> None:
    port = _free_port()

    async def scenario() -> None:
        sender_pc, receiver_pc = make_peer_connection(), make_peer_connection()
        create_channels(sender_pc)
        sender = TcpSignaling(HOST, port, "desk", SECRET)
        receiver = TcpSignaling(HOST, port, "desk", SECRET)

        async def late_offer() -> None:
            await asyncio.sleep(0.6)  # answer() meanwhile retries the connection
            await offer(sender_pc, sender)

        try:
            await asyncio.gather(late_offer(), answer(receiver_pc, receiver, 10))
            assert sender_pc.remoteDescription.type == "answer"
        finally:
            await _close_all(sender, receiver)
            await sender_pc.close()
            await receiver_pc.close()

    _run(scenario())


def test_tcp_listener_refuses_bad_peers_and_keeps_waiting(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    where = f"127.0.0.1:{port}"
    limits = SignalingLimits(handshake_timeout_s=0.3)

    async def intruders() -> None:
        wrong = TcpSignaling(HOST, port, "desk", b"wrong", limits)
        with pytest.raises(SignalingError) as refused:
            await _receive_retrying(wrong)
        assert str(refused.value) == f"signaling refused by {where}: wrong secret"
        wrong_room = TcpSignaling(HOST, port, "lobby", SECRET, limits)
        with pytest.raises(SignalingError) as refused:
            await wrong_room.receive()
        assert str(refused.value) == (
            f"signaling refused by {where}: room 'lobby' is not this peer's room"
        )
        for garbage, then_eof in ((b"\xff\xfe garbage\n", False), (b"x" * 100, True), (b"", False)):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(garbage)  # the empty one stays silent until the handshake times out
            if then_eof:
                writer.write_eof()
            while await _read_json(reader) is not None:
                pass
            writer.close()

    async def scenario() -> None:
        sender = TcpSignaling(HOST, port, "desk", SECRET, limits)
        receiver = TcpSignaling(HOST, port, "desk", SECRET, limits)
        offering = asyncio.create_task(sender.send(OFFER))
        await intruders()
        assert not offering.done()
        assert await receiver.receive() == OFFER
        await offering
        await receiver.send(ANSWER)
        assert await sender.receive() == ANSWER
        await _close_all(sender, receiver)

    with caplog.at_level(logging.INFO):
        _run(scenario())
    refusals = [r.getMessage() for r in caplog.records if "refused a signaling" in r.getMessage()]
    assert [message.split(": ", 1)[1] for message in refusals] == [
        "wrong secret",
        "room 'lobby' is not this peer's room",
        "line is not UTF-8",
        "line of 100 bytes ends without a newline",
        "no handshake within 0.3 s",
    ]
    _no_tracebacks(caplog)


def test_connector_needs_the_listener_to_prove_the_secret() -> None:
    """A listener that does not know the secret cannot pass itself off as the sender."""

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps({"talkcodec": 1, "nonce": NONCE}).encode() + b"\n")
        await reader.readline()
        writer.write(json.dumps({"talkcodec": 1, "auth": "0" * 64}).encode() + b"\n")
        await reader.read()

    async def scenario() -> None:
        server = await asyncio.start_server(impostor, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(SignalingError) as refused:
            await TcpSignaling(HOST, port, "desk", SECRET).receive()
        assert str(refused.value) == (
            f"127.0.0.1:{port} did not prove the shared secret: wrong secret"
        )
        server.close()

    _run(scenario())


@pytest.mark.parametrize(
    ("secret", "sent", "message"),
    [
        (None, b"not json\n", "bad signaling message from {where}: line is not JSON"),
        (
            None,
            b'{"type": "offer"}\n',
            'bad signaling message from {where}: offer needs a string "sdp" and nothing else',
        ),
        (
            None,
            b'{"type": "hello"}\n',
            "bad signaling message from {where}: unknown signaling message type 'hello'",
        ),
        (
            None,
            b'{"type": "candidate", "candidate": "candidate:x", "id": "0", "label": 0}\n',
            "bad signaling message from {where}: malformed candidate message",
        ),
        (
            None,
            b"y" * (MAX_LINE_BYTES + 10),
            "bad signaling message from {where}: line longer than 65536 bytes",
        ),
        (
            SECRET,
            b'{"type": "offer", "sdp": "v=0"}\n',
            "signaling handshake with {where} failed: "
            'expected a talkcodec handshake line, got one without "talkcodec"',
        ),
        (
            SECRET,
            b'{"talkcodec": 1, "error": "busy\\nnow"}\n',
            "signaling refused by {where}: busy?now",
        ),
        (SECRET, b"", "{where} closed the connection during the signaling handshake"),
        (
            None,
            b'{"talkcodec": 1, "nonce": "' + NONCE.encode() + b'"}\n',
            "{where} asks for the shared secret: set --secret or TALKCODEC_SECRET",
        ),
    ],
)
def test_connector_turns_malformed_lines_into_one_line_errors(
    secret: bytes | None, sent: bytes, message: str
) -> None:
    async def scenario() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(sent)
            writer.close()

        server = await asyncio.start_server(serve, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(SignalingError) as failed:
            await TcpSignaling(HOST, port, "desk", secret).receive()
        where = f"127.0.0.1:{port}"
        assert str(failed.value) == message.format(
            where=where, bad=f"bad signaling message from {where}: "
        )
        server.close()

    _run(scenario())


def test_tcp_without_secret_speaks_plain_aiortc_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()

    async def scenario() -> None:
        ours = TcpSignaling(HOST, port)
        theirs = TcpSocketSignaling(HOST, port)
        await _exchange(ours, theirs)
        await ours.close()
        assert await theirs.receive() is BYE
        await theirs.close()

    with caplog.at_level(logging.WARNING):
        _run(scenario())
    ours = [r for r in caplog.records if r.name == "talkcodec.transport.signaling"]
    assert [r.getMessage() for r in ours] == [
        f"signaling on 127.0.0.1:{port} without a secret: anyone who can reach it may join the "
        "call (set --secret or TALKCODEC_SECRET)"
    ]


def test_unix_socket_pairs_peers_that_prove_the_secret(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")

    async def scenario() -> None:
        sender = UnixSignaling(path, "desk", SECRET)
        wrong = UnixSignaling(path, "desk", b"wrong")
        receiver = UnixSignaling(path, "desk", SECRET)
        offering = asyncio.create_task(sender.send(OFFER))
        with pytest.raises(SignalingError) as refused:
            await _receive_retrying(wrong)
        assert str(refused.value) == f"signaling refused by {path}: wrong secret"
        assert await receiver.receive() == OFFER
        await offering
        await receiver.send(ANSWER)
        assert await sender.receive() == ANSWER
        await _close_all(sender, receiver)

    _run(scenario())
    assert not Path(path).exists()


# -- command line -----------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_signaling_arguments(parser)
    return parser.parse_args(argv)


def test_secret_comes_from_the_flag_else_the_environment() -> None:
    assert resolve_secret("flag", {"TALKCODEC_SECRET": "env"}) == b"flag"
    assert resolve_secret(None, {"TALKCODEC_SECRET": "env"}) == b"env"
    assert resolve_secret(None, {"TALKCODEC_SECRET": ""}) is None
    assert resolve_secret(None, {}) is None


def test_create_signaling_honours_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        async with running_relay() as (_, port):
            args = _parse(["-s", "relay", "--signaling-port", str(port), "--room", "desk"])
            monkeypatch.setenv("TALKCODEC_SECRET", SECRET.decode())
            await _exchange(create_signaling(args), _relay_peer(port))
            monkeypatch.setenv("TALKCODEC_SECRET", "not it")
            with pytest.raises(SignalingError) as refused:
                await create_signaling(args).connect()
            assert (
                str(refused.value) == f"signaling refused by relay 127.0.0.1:{port}: wrong secret"
            )

    _run(scenario())


def test_room_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parse([]).room == "default"
    with pytest.raises(SystemExit):
        _parse(["--room", "no spaces"])
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith("argument --room: room must be 1 to 64 of A-Z a-z 0-9 . _ -, got 'no spaces'")
    )
