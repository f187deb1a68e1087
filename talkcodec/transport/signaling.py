"""Signaling: how the two peers swap their session descriptions.

aiortc's conventions (`--signaling tcp-socket|unix-socket|copy-and-paste`, `--signaling-host`,
`--signaling-port`, `--signaling-path`): with a socket, the side that sends first (the
sender's offer) listens and the receiver connects. `--signaling relay` is for when neither side
can listen: both connect to `python peers/signaling_server.py`, which pairs the two peers of a
room and passes lines between them.

With a shared secret (`--secret` or TALKCODEC_SECRET) every connection starts with a
challenge-response handshake in which both ends prove they know the secret (HMAC-SHA256 over the
room and two fresh nonces; the secret never travels); only then are session descriptions
accepted. Without one, tcp-socket and unix-socket speak aiortc's plain protocol, as before. Every
line is bounded and checked: a malformed line is a one-line `SignalingError`, never a traceback.
The wire format, byte by byte, is in docs/signaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from aiortc import RTCIceCandidate, RTCSessionDescription
from aiortc.contrib.signaling import (
    BYE,
    BaseSignaling,
    CopyAndPasteSignaling,
    SignalingBye,
    object_from_string,
    object_to_string,
)

from talkcodec.transport.peer import SignalingError

logger = logging.getLogger(__name__)

SIGNALING_METHODS = ("tcp-socket", "unix-socket", "copy-and-paste", "relay")
DEFAULT_SIGNALING_PORT = 1234
DEFAULT_ROOM = "default"
SECRET_ENV = "TALKCODEC_SECRET"

HANDSHAKE_VERSION = 1
MAX_LINE_BYTES = 64 * 1024  # newline included; session descriptions are a few kB
HANDSHAKE_TIMEOUT_S = 10.0
MAX_PENDING_HANDSHAKES = 8  # a listener vets at most this many connections at once
NONCE_BYTES = 16
CLIENT_ROLE = "client"  # the side that connects (the receiver, or either peer of a relay)
SERVER_ROLE = "server"  # the side that accepts (the listening sender, or the relay)

ROOM_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
NONCE_PATTERN = re.compile(r"[0-9a-f]{32}")
AUTH_PATTERN = re.compile(r"[0-9a-f]{64}")
MAX_REASON_CHARS = 200

SignalingObject = RTCSessionDescription | RTCIceCandidate | SignalingBye
ConnectionCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ProtocolError(ValueError):
    """A line the signaling protocol does not accept: framing, JSON, fields, or a failed proof."""


@dataclass(frozen=True)
class SignalingLimits:
    max_line_bytes: int = MAX_LINE_BYTES
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    max_pending_handshakes: int = MAX_PENDING_HANDSHAKES


# -- the wire ---------------------------------------------------------------------------------


def check_room(room: str) -> str:
    if not ROOM_PATTERN.fullmatch(room):
        raise ValueError(f"room must be 1 to 64 of A-Z a-z 0-9 . _ -, got {_short(room)}")
    return room


def resolve_secret(flag: str | None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The shared secret: the flag, else $TALKCODEC_SECRET; None when both are absent or empty."""
    value = flag
    if value is None:
        value = (os.environ if environ is None else environ).get(SECRET_ENV)
    return value.encode("utf-8") if value else None


def handshake_proof(
    secret: bytes, role: str, room: str, server_nonce: str, client_nonce: str
) -> str:
    """HMAC-SHA256(secret, "talkcodec/1|ROLE|ROOM|SERVER_NONCE|CLIENT_NONCE"), 64 hex digits.
    The role keeps one side's proof from being reflected back as the other's."""
    message = f"talkcodec/{HANDSHAKE_VERSION}|{role}|{room}|{server_nonce}|{client_nonce}"
    return hmac.new(secret, message.encode("ascii"), sha256).hexdigest()


async def read_line(reader: asyncio.StreamReader, max_line_bytes: int) -> bytes | None:
    """The next line, newline included; None at a clean end of stream. The reader's limit must
    be max_line_bytes (it bounds what the stream buffers while it looks for the newline)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise ProtocolError(
                f"line of {len(error.partial)} bytes ends without a newline"
            ) from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"line longer than {max_line_bytes} bytes") from None
    if len(line) > max_line_bytes:
        raise ProtocolError(f"line longer than {max_line_bytes} bytes")
    return line


def decode_json_line(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("line is not UTF-8") from None
    except (ValueError, RecursionError):
        raise ProtocolError("line is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("line is not a JSON object")
    return message


def json_line(message: Mapping[str, object]) -> bytes:
    return json.dumps(message, sort_keys=True).encode("utf-8") + b"\n"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _printable(value: object) -> str:
    """A reason from the other side, safe to show on one line."""
    text = str(value)[:MAX_REASON_CHARS]
    return "".join(char if char.isprintable() else "?" for char in text)


def _field(message: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ProtocolError(f"{name} must be {what}, got {_short(value)}")
    return value


def _check_version(message: Mapping[str, Any]) -> None:
    if "talkcodec" not in message:
        raise ProtocolError('expected a talkcodec handshake line, got one without "talkcodec"')
    version = message["talkcodec"]
    if type(version) is not int or version != HANDSHAKE_VERSION:
        raise ProtocolError(
            f"expected talkcodec handshake version {HANDSHAKE_VERSION}, got {_short(version)}"
        )


@dataclass(frozen=True)
class Challenge:
    """The server's first line: {"talkcodec": 1, "nonce": SERVER_NONCE}."""

    nonce: str

    def __bytes__(self) -> bytes:
        return json_line({"talkcodec": HANDSHAKE_VERSION, "nonce": self.nonce})

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> Challenge:
        _check_version(message)
        return cls(_field(message, "nonce", NONCE_PATTERN, "32 lowercase hex digits"))


@dataclass(frozen=True)
class Hello:
    """The client's answer: {"talkcodec": 1, "room": ROOM, "nonce": CLIENT_NONCE, "auth": PROOF}
    (auth null without a secret, accepted only by a relay run with --insecure)."""

    room: str
    nonce: str
    auth: str | None

    def __bytes__(self) -> bytes:
        fields = {"room": self.room, "nonce": self.nonce, "auth": self.auth}
        return json_line({"talkcodec": HANDSHAKE_VERSION, **fields})

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> Hello:
        _check_version(message)
        room = _field(message, "room", ROOM_PATTERN, "1 to 64 of A-Z a-z 0-9 . _ -")
        nonce = _field(message, "nonce", NONCE_PATTERN, "32 lowercase hex digits")
        if message.get("auth") is None:
            return cls(room, nonce, None)
        return cls(room, nonce, _field(message, "auth", AUTH_PATTERN, "64 lowercase hex digits"))


@dataclass(frozen=True)
class Welcome:
    """The server accepts: {"talkcodec": 1, "auth": PROOF} (null from a relay run --insecure)."""

    auth: str | None

    def __bytes__(self) -> bytes:
        return json_line({"talkcodec": HANDSHAKE_VERSION, "auth": self.auth})

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> Welcome:
        _check_version(message)
        if "auth" not in message:
            raise ProtocolError('expected "auth" in the handshake reply')
        if message["auth"] is None:
            return cls(None)
        return cls(_field(message, "auth", AUTH_PATTERN, "64 lowercase hex digits"))


@dataclass(frozen=True)
class Refusal:
    """The server's last line on a connection it closes: {"talkcodec": 1, "error": REASON}."""

    reason: str

    def __bytes__(self) -> bytes:
        return json_line({"talkcodec": HANDSHAKE_VERSION, "error": self.reason})

    @classmethod
    def find(cls, message: Mapping[str, Any]) -> Refusal | None:
        if "talkcodec" not in message or "error" not in message:
            return None
        return cls(_printable(message["error"]))


def to_signaling_object(message: Mapping[str, Any], line: bytes) -> SignalingObject:
    """aiortc's message from its JSON object (checked here: aiortc's parser trusts it)."""
    kind = message.get("type")
    problem = _message_problem(kind, message)
    if problem is not None:
        raise ProtocolError(problem)
    try:
        return object_from_string(line.decode("utf-8"))
    except (ValueError, IndexError, AssertionError):  # aiortc's SDP parser asserts on bad input
        raise ProtocolError(f"malformed {kind} message") from None


def _message_problem(kind: object, message: Mapping[str, Any]) -> str | None:
    if kind in ("offer", "answer"):
        fine = set(message) == {"sdp", "type"} and isinstance(message["sdp"], str)
        return None if fine else f'{kind} needs a string "sdp" and nothing else'
    if kind == "candidate":
        fine = (
            isinstance(message.get("candidate"), str)
            and isinstance(message.get("id"), str | None)
            and isinstance(message.get("label"), int | None)
        )
        return None if fine else 'candidate needs a string "candidate", "id" and an integer "label"'
    return None if kind == "bye" else f"unknown signaling message type {_short(kind)}"


# -- the handshake ----------------------------------------------------------------------------


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    room: str,
    secret: bytes | None,
    max_line_bytes: int,
    where: str,
) -> None:
    """The connecting side: answer the challenge, then check the server's own proof."""
    challenge = Challenge.parse(await _read_server_line(reader, max_line_bytes, where))
    nonce = secrets.token_hex(NONCE_BYTES)
    auth = None
    if secret is not None:
        auth = handshake_proof(secret, CLIENT_ROLE, room, challenge.nonce, nonce)
    writer.write(bytes(Hello(room, nonce, auth)))
    await writer.drain()
    welcome = Welcome.parse(await _read_server_line(reader, max_line_bytes, where))
    if secret is None:
        return
    if welcome.auth is None:
        raise SignalingError(
            f"{where} runs without a secret (--insecure); refusing it with a secret"
        )
    expected = handshake_proof(secret, SERVER_ROLE, room, challenge.nonce, nonce)
    if not hmac.compare_digest(welcome.auth, expected):
        raise SignalingError(f"{where} did not prove the shared secret: wrong secret")


async def _read_server_line(
    reader: asyncio.StreamReader, max_line_bytes: int, where: str
) -> dict[str, Any]:
    line = await read_line(reader, max_line_bytes)
    if line is None:
        raise SignalingError(f"{where} closed the connection during the signaling handshake")
    message = decode_json_line(line)
    refusal = Refusal.find(message)
    if refusal is not None:
        raise SignalingError(f"signaling refused by {where}: {refusal.reason}")
    return message


async def serve_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: bytes,
    room: str | None,
    limits: SignalingLimits,
) -> str:
    """The accepting side: challenge, check the client's proof (and room, unless None), and
    return this side's proof for the Welcome. ProtocolError says why the client is refused."""
    server_nonce = secrets.token_hex(NONCE_BYTES)
    writer.write(bytes(Challenge(server_nonce)))
    try:
        async with asyncio.timeout(limits.handshake_timeout_s):  # not wait_for: 3.11's can
            line = await read_line(reader, limits.max_line_bytes)  # swallow a cancellation
    except TimeoutError:
        raise ProtocolError(f"no handshake within {limits.handshake_timeout_s:g} s") from None
    if line is None:
        raise ProtocolError("left during the handshake")
    hello = Hello.parse(decode_json_line(line))
    if hello.auth is None:
        raise ProtocolError(f"a secret is needed: set --secret or {SECRET_ENV}")
    expected = handshake_proof(secret, CLIENT_ROLE, hello.room, server_nonce, hello.nonce)
    if not hmac.compare_digest(hello.auth, expected):
        raise ProtocolError("wrong secret")
    if room is not None and hello.room != room:
        raise ProtocolError(f"room {hello.room!r} is not this peer's room")
    return handshake_proof(secret, SERVER_ROLE, hello.room, server_nonce, hello.nonce)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "a unix-socket peer"


# -- the signaling classes ----------------------------------------------------------------------


class _LineSignaling(BaseSignaling):
    """One newline-framed connection carrying aiortc's messages; subclasses open it."""

    def __init__(self, room: str, secret: bytes | None, limits: SignalingLimits) -> None:
        self._room = check_room(room)
        self._secret = secret
        self._limits = limits
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._warned = False

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the other side is, for messages: HOST:PORT, a socket path, relay HOST:PORT."""

    def _warn_without_secret(self) -> None:
        if self._secret is None and not self._warned:
            self._warned = True
            logger.warning(
                "signaling on %s without a secret: anyone who can reach it may join the call "
                "(set --secret or %s)", self.where, SECRET_ENV,
            )  # fmt: skip

    async def _client_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Prove the secret to the server and check its proof; closes the connection on failure."""
        limits = self._limits
        try:
            async with asyncio.timeout(limits.handshake_timeout_s):
                await client_handshake(
                    reader, writer, self._room, self._secret, limits.max_line_bytes, self.where
                )
        except TimeoutError:
            writer.close()
            raise SignalingError(
                f"no signaling handshake from {self.where} within {limits.handshake_timeout_s:g} s"
            ) from None
        except ProtocolError as error:
            writer.close()
            raise SignalingError(f"signaling handshake with {self.where} failed: {error}") from None
        except BaseException:
            writer.close()
            raise

    async def _receive_message(self) -> SignalingObject | None:
        assert self._reader is not None
        try:
            line = await read_line(self._reader, self._limits.max_line_bytes)
            if line is None:
                return None
            message = decode_json_line(line)
            self._check_not_control(message)
            return to_signaling_object(message, line)
        except ProtocolError as error:
            raise SignalingError(f"bad signaling message from {self.where}: {error}") from None
        except ConnectionError as error:
            raise SignalingError(f"signaling connection to {self.where} lost: {error}") from None

    def _check_not_control(self, message: Mapping[str, Any]) -> None:
        """A handshake or relay line where a signaling message belongs, explained."""
        refusal = Refusal.find(message)
        if refusal is not None:
            raise SignalingError(f"{self.where} closed the signaling connection: {refusal.reason}")
        if "talkcodec" in message and "nonce" in message:
            raise SignalingError(
                f"{self.where} asks for the shared secret: set --secret or {SECRET_ENV}"
            )

    async def _send_message(self, descr: SignalingObject) -> None:
        assert self._writer is not None
        try:
            self._writer.write(object_to_string(descr).encode("utf-8") + b"\n")
            await self._writer.drain()
        except ConnectionError as error:
            raise SignalingError(f"signaling connection to {self.where} lost: {error}") from None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.write(object_to_string(BYE).encode("utf-8") + b"\n")  # as aiortc's; best effort
            writer.close()


class RelaySignaling(_LineSignaling):
    """Both peers connect as clients to a relay (peers/signaling_server.py), which pairs the two
    peers of a room once each has proved the secret (and the relay has proved it back)."""

    def __init__(
        self,
        host: str,
        port: int,
        room: str = DEFAULT_ROOM,
        secret: bytes | None = None,
        limits: SignalingLimits = SignalingLimits(),
    ) -> None:
        super().__init__(room, secret, limits)
        self._host = host
        self._port = port

    @property
    def where(self) -> str:
        return f"relay {self._host}:{self._port}"

    async def connect(self) -> None:
        if self._writer is not None:
            return
        self._warn_without_secret()
        try:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, limit=self._limits.max_line_bytes
            )
            await self._client_handshake(reader, writer)
        except OSError as error:
            raise SignalingError(f"cannot reach the signaling {self.where}: {error}") from None
        self._reader, self._writer = reader, writer
        logger.info("joined room %r on the signaling %s", self._room, self.where)

    async def receive(self) -> SignalingObject | None:
        await self.connect()
        return await self._receive_message()

    async def send(self, descr: SignalingObject) -> None:
        await self.connect()
        await self._send_message(descr)


class SocketSignaling(_LineSignaling):
    """aiortc's socket signaling, with the handshake when there is a secret: the side that sends
    first listens and takes the first connection that proves the secret (without a secret, the
    first connection), refusing the others and staying up; the side that receives first connects."""

    def __init__(self, room: str, secret: bytes | None, limits: SignalingLimits) -> None:
        super().__init__(room, secret, limits)
        self._server: asyncio.AbstractServer | None = None
        self._pending_handshakes = 0

    @abstractmethod
    async def _start_server(self, on_connection: ConnectionCallback) -> asyncio.AbstractServer:
        """Listen; on_connection runs for every incoming connection."""

    @abstractmethod
    async def _open_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the listening side (OSError while it is not listening yet)."""

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def connect(self) -> None:
        """Nothing yet: as with aiortc's, the first send listens and the first receive connects."""

    async def send(self, descr: SignalingObject) -> None:
        await self._listen()
        await self._send_message(descr)

    async def receive(self) -> SignalingObject | None:
        await self._dial()
        return await self._receive_message()

    async def close(self) -> None:
        await super().close()
        self._stop_server()

    async def _dial(self) -> None:
        if self._writer is not None:
            return
        self._warn_without_secret()
        # An OSError here means the listener is not up yet: peer.answer() retries.
        reader, writer = await self._open_connection()
        if self._secret is not None:
            await self._client_handshake(reader, writer)
        self._reader, self._writer = reader, writer

    async def _listen(self) -> None:
        if self._writer is not None:
            return
        self._warn_without_secret()
        accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        accepted = asyncio.get_running_loop().create_future()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self._vet(reader, writer, accepted)
            except asyncio.CancelledError:
                # The loop shuts down mid-handshake. Nobody awaits this task, and Python 3.11's
                # stream server logs a traceback for one that ends cancelled: end it quietly.
                writer.close()

        try:
            self._server = await self._start_server(on_connection)
        except OSError as error:
            raise SignalingError(f"cannot listen for signaling on {self.where}: {error}") from None
        logger.info("waiting for the signaling peer on %s (room %r)", self.where, self._room)
        try:
            self._reader, self._writer = await accepted
        finally:
            self._stop_server()  # one peer per call: nobody else may connect

    async def _vet(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> None:
        """One incoming connection: the peer if it proves the secret, else refused and closed."""
        address = _peer_address(writer)
        if accepted.done() or self._pending_handshakes >= self._limits.max_pending_handshakes:
            _refuse(writer, address, "busy with another signaling peer")
            return
        self._pending_handshakes += 1
        proof = None
        try:
            if self._secret is not None:
                proof = await serve_handshake(
                    reader, writer, self._secret, self._room, self._limits
                )
        except ProtocolError as error:
            _refuse(writer, address, str(error))
            return
        except OSError as error:
            logger.info("signaling connection from %s dropped: %s", address, error)
            writer.close()
            return
        finally:
            self._pending_handshakes -= 1
        if accepted.done():
            _refuse(writer, address, "busy with another signaling peer")
            return
        if proof is not None:
            writer.write(bytes(Welcome(proof)))
        logger.info("signaling peer %s connected", address)
        accepted.set_result((reader, writer))


def _refuse(writer: asyncio.StreamWriter, address: str, reason: str) -> None:
    logger.warning("refused a signaling connection from %s: %s", address, reason)
    writer.write(bytes(Refusal(reason)))
    writer.close()


class TcpSignaling(SocketSignaling):
    def __init__(
        self,
        host: str,
        port: int,
        room: str = DEFAULT_ROOM,
        secret: bytes | None = None,
        limits: SignalingLimits = SignalingLimits(),
    ) -> None:
        super().__init__(room, secret, limits)
        self._host = host
        self._port = port

    @property
    def where(self) -> str:
        return f"{self._host}:{self._port}"

    async def _start_server(self, on_connection: ConnectionCallback) -> asyncio.AbstractServer:
        return await asyncio.start_server(
            on_connection, self._host, self._port, limit=self._limits.max_line_bytes
        )

    async def _open_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            self._host, self._port, limit=self._limits.max_line_bytes
        )


class UnixSignaling(SocketSignaling):
    def __init__(
        self,
        path: str,
        room: str = DEFAULT_ROOM,
        secret: bytes | None = None,
        limits: SignalingLimits = SignalingLimits(),
    ) -> None:
        super().__init__(room, secret, limits)
        self._path = path

    @property
    def where(self) -> str:
        return self._path

    async def _start_server(self, on_connection: ConnectionCallback) -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(
            on_connection, self._path, limit=self._limits.max_line_bytes
        )

    async def _open_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(self._path, limit=self._limits.max_line_bytes)

    def _stop_server(self) -> None:
        if self._server is not None and sys.version_info < (3, 13):
            # Python 3.13 removes the socket file when the server closes; earlier ones do not.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        super()._stop_server()


# -- command line -----------------------------------------------------------------------------


def _room_argument(text: str) -> str:
    try:
        return check_room(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_signaling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signaling", "-s", choices=SIGNALING_METHODS, default="tcp-socket",
        help="how the peers swap session descriptions",
    )  # fmt: skip
    parser.add_argument("--signaling-host", default="127.0.0.1", help="tcp-socket/relay host")
    parser.add_argument(
        "--signaling-port", type=int, default=DEFAULT_SIGNALING_PORT, help="tcp-socket/relay port"
    )
    parser.add_argument("--signaling-path", default="talkcodec.socket", help="unix-socket path")
    parser.add_argument(
        "--room", type=_room_argument, default=DEFAULT_ROOM,
        help="the call's room: the relay pairs the two peers of a room (A-Z a-z 0-9 . _ -)",
    )  # fmt: skip
    parser.add_argument(
        "--secret", default=None,
        help=f"shared secret both peers (and the relay) prove they know; default ${SECRET_ENV}, "
        "which, unlike the flag, other users of the machine cannot see",
    )  # fmt: skip
    parser.add_argument(
        "--ice-server", action="append", default=[], metavar="URL[,USER,CREDENTIAL]",
        help="STUN/TURN server (repeatable); none by default: LAN and loopback need none",
    )  # fmt: skip


def create_signaling(args: argparse.Namespace) -> BaseSignaling:
    secret = resolve_secret(args.secret)
    if args.signaling == "tcp-socket":
        return TcpSignaling(args.signaling_host, args.signaling_port, args.room, secret)
    if args.signaling == "unix-socket":
        return UnixSignaling(args.signaling_path, args.room, secret)
    if args.signaling == "relay":
        return RelaySignaling(args.signaling_host, args.signaling_port, args.room, secret)
    return CopyAndPasteSignaling()
