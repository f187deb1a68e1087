"""A stand-alone signaling relay for when neither peer can listen.

    export TALKCODEC_SECRET=...   # the same secret on the relay and on both peers
    python peers/signaling_server.py --host 0.0.0.0 --port 1234
    talkcodec send --video clip.mp4 --signaling relay --signaling-host RELAY_HOST --room desk
    talkcodec receive --signaling relay --signaling-host RELAY_HOST --room desk

Every connection first proves the shared secret in a challenge-response handshake (and the
relay proves it back); then the relay pairs the two peers of a room and passes each
newline-terminated line from one to the other (aiortc's signaling messages are one JSON object
per line). Lines sent before the partner arrives are held. A third peer in a room, a wrong
secret, a malformed or oversized line, a silent or idle peer close that connection only, with a
one-line reason sent to the peer and logged. Without a secret it refuses to start unless run
with --insecure. The wire format is in docs/signaling.md. Needs only the standard library (so
the handshake's few lines are a copy of talkcodec/transport/signaling.py's; the tests check both
sides against each other).
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
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

logger = logging.getLogger("signaling_server")

HANDSHAKE_VERSION = 1
MAX_LINE_BYTES = 64 * 1024  # newline included; session descriptions are a few kB
MAX_CONNECTIONS = 64
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0
PEERS_PER_ROOM = 2
NONCE_BYTES = 16
SECRET_ENV = "TALKCODEC_SECRET"
ROOM_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
NONCE_PATTERN = re.compile(r"[0-9a-f]{32}")
AUTH_PATTERN = re.compile(r"[0-9a-f]{64}")
RELAYED_TYPES = ("offer", "answer", "candidate", "bye")  # aiortc's message types


class RelayError(Exception):
    """Why the relay closes a connection; sent to that peer as its last line."""


@dataclass(frozen=True)
class RelayLimits:
    max_line_bytes: int = MAX_LINE_BYTES
    max_connections: int = MAX_CONNECTIONS
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S


def proof(secret: bytes, role: str, room: str, server_nonce: str, client_nonce: str) -> str:
    """HMAC-SHA256(secret, "talkcodec/1|ROLE|ROOM|SERVER_NONCE|CLIENT_NONCE"), 64 hex digits."""
    message = f"talkcodec/{HANDSHAKE_VERSION}|{role}|{room}|{server_nonce}|{client_nonce}"
    return hmac.new(secret, message.encode("ascii"), sha256).hexdigest()


def json_line(message: dict[str, object]) -> bytes:
    return json.dumps(message, sort_keys=True).encode("utf-8") + b"\n"


async def read_line(reader: asyncio.StreamReader, max_line_bytes: int) -> bytes | None:
    """The next line, newline included; None at a clean end of stream."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise RelayError(f"line of {len(error.partial)} bytes ends without a newline") from None
        return None
    except asyncio.LimitOverrunError:
        raise RelayError(f"line longer than {max_line_bytes} bytes") from None
    if len(line) > max_line_bytes:
        raise RelayError(f"line longer than {max_line_bytes} bytes")
    return line


def decode_json_line(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise RelayError("line is not UTF-8") from None
    except (ValueError, RecursionError):
        raise RelayError("line is not JSON") from None
    if not isinstance(message, dict):
        raise RelayError("line is not a JSON object")
    return message


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(message: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RelayError(f"{name} must be {what}, got {_short(value)}")
    return value


@dataclass(frozen=True)
class Hello:
    """The peer's handshake line: {"talkcodec": 1, "room": R, "nonce": N, "auth": PROOF|null}."""

    room: str
    nonce: str
    auth: str | None

    @classmethod
    def parse(cls, line: bytes) -> Hello:
        message = decode_json_line(line)
        if "talkcodec" not in message:
            raise RelayError('expected a talkcodec handshake line, got one without "talkcodec"')
        version = message["talkcodec"]
        if type(version) is not int or version != HANDSHAKE_VERSION:
            raise RelayError(
                f"expected talkcodec handshake version {HANDSHAKE_VERSION}, got {_short(version)}"
            )
        room = _field(message, "room", ROOM_PATTERN, "1 to 64 of A-Z a-z 0-9 . _ -")
        nonce = _field(message, "nonce", NONCE_PATTERN, "32 lowercase hex digits")
        if message.get("auth") is None:
            return cls(room, nonce, None)
        return cls(room, nonce, _field(message, "auth", AUTH_PATTERN, "64 lowercase hex digits"))


def check_relayed(line: bytes) -> None:
    """A line worth passing on: one of aiortc's messages, not a handshake or relay line."""
    message = decode_json_line(line)
    if "talkcodec" in message or message.get("type") not in RELAYED_TYPES:
        raise RelayError(f"expected a signaling message, got type {_short(message.get('type'))}")


@dataclass(eq=False)
class _Peer:
    room: str
    writer: asyncio.StreamWriter
    partner: asyncio.Future[_Peer]


def _address_of(name: object) -> str:
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)


def _address(writer: asyncio.StreamWriter) -> str:
    return _address_of(writer.get_extra_info("peername"))


def _send_error(writer: asyncio.StreamWriter, reason: str) -> None:
    writer.write(json_line({"talkcodec": HANDSHAKE_VERSION, "error": reason}))


class Relay:
    """Pairs the two peers of a room; secret None admits anyone (--insecure)."""

    def __init__(self, secret: bytes | None, limits: RelayLimits = RelayLimits()) -> None:
        self._secret = secret
        self._limits = limits
        self._rooms: dict[str, list[_Peer]] = {}
        self._connections = 0

    @property
    def limits(self) -> RelayLimits:
        return self._limits

    @property
    def connections(self) -> int:
        """Open connections: being vetted, waiting for a partner, or paired."""
        return self._connections

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = _address(writer)
        if self._connections >= self._limits.max_connections:
            logger.warning("refused %s: the relay is full", address)
            _send_error(writer, f"the relay is full ({self._limits.max_connections} connections)")
            writer.close()
            return
        self._connections += 1
        peer: _Peer | None = None
        try:
            peer = await self._admit(reader, writer)
            logger.info("%s joined room %r", address, peer.room)
            await self._pump(peer, reader)
        except RelayError as error:
            logger.warning("closed %s: %s", address, error)
            _send_error(writer, str(error))
        except OSError as error:
            logger.info("%s dropped: %s", address, error)
        except asyncio.CancelledError:
            # The relay shuts down. Nobody awaits this task, and Python 3.11's stream server
            # logs a traceback for one that ends cancelled: end it quietly.
            logger.info("%s closed: the relay stops", address)
        finally:
            self._connections -= 1
            if peer is not None:
                self._leave(peer)
            writer.close()

    async def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Peer:
        """The handshake, then a place in the room; the Welcome goes out only once both hold."""
        server_nonce = secrets.token_hex(NONCE_BYTES)
        writer.write(json_line({"talkcodec": HANDSHAKE_VERSION, "nonce": server_nonce}))
        timeout_s = self._limits.handshake_timeout_s
        line = await self._read(reader, timeout_s, f"no handshake within {timeout_s:g} s")
        if line is None:
            raise RelayError("left during the handshake")
        hello = Hello.parse(line)
        relay_proof = self._check_proof(hello, server_nonce)
        peer = self._join(hello.room, writer)
        writer.write(json_line({"talkcodec": HANDSHAKE_VERSION, "auth": relay_proof}))
        return peer

    def _check_proof(self, hello: Hello, server_nonce: str) -> str | None:
        """The relay's own proof for the Welcome (None when insecure)."""
        if self._secret is None:
            return None
        if hello.auth is None:
            raise RelayError(f"a secret is needed: set --secret or {SECRET_ENV}")
        expected = proof(self._secret, "client", hello.room, server_nonce, hello.nonce)
        if not hmac.compare_digest(hello.auth, expected):
            raise RelayError("wrong secret")
        return proof(self._secret, "server", hello.room, server_nonce, hello.nonce)

    def _join(self, room: str, writer: asyncio.StreamWriter) -> _Peer:
        members = self._rooms.setdefault(room, [])
        if len(members) >= PEERS_PER_ROOM:
            raise RelayError(f"room {room!r} is full ({PEERS_PER_ROOM} peers)")
        peer = _Peer(room, writer, asyncio.get_running_loop().create_future())
        if members:
            other = members[0]
            other.partner.set_result(peer)
            peer.partner.set_result(other)
            logger.info("paired two peers in room %r", room)
        members.append(peer)
        return peer

    def _leave(self, peer: _Peer) -> None:
        """Out of the room, with the partner (who is closed: the pairing is over)."""
        partner = peer.partner.result() if peer.partner.done() else None
        members = self._rooms.get(peer.room, [])
        for gone in (peer, partner):
            if gone in members:
                members.remove(gone)
        if not members:
            self._rooms.pop(peer.room, None)
        if partner is not None:
            partner.writer.close()

    async def _pump(self, peer: _Peer, reader: asyncio.StreamReader) -> None:
        """Each line from this peer to its partner, waiting for the partner to arrive."""
        idle_s = self._limits.idle_timeout_s
        while (line := await self._read(reader, idle_s, f"idle for {idle_s:g} s")) is not None:
            check_relayed(line)
            try:
                async with asyncio.timeout(idle_s):  # not wait_for: 3.11's can swallow a cancel
                    partner = await asyncio.shield(peer.partner)  # the future outlives a timeout
                    partner.writer.write(line)
                    await partner.writer.drain()
            except TimeoutError:
                raise RelayError(
                    f"no partner in room {peer.room!r} took the line within {idle_s:g} s"
                ) from None

    async def _read(
        self, reader: asyncio.StreamReader, timeout_s: float, on_timeout: str
    ) -> bytes | None:
        try:
            async with asyncio.timeout(timeout_s):
                return await read_line(reader, self._limits.max_line_bytes)
        except TimeoutError:
            raise RelayError(on_timeout) from None


async def start_relay(relay: Relay, host: str, port: int) -> asyncio.Server:
    """The listening relay (port 0: any free port; see server.sockets)."""
    return await asyncio.start_server(relay.handle, host, port, limit=relay.limits.max_line_bytes)


async def serve(relay: Relay, host: str, port: int) -> None:
    server = await start_relay(relay, host, port)
    bound = ", ".join(_address_of(sock.getsockname()) for sock in server.sockets)
    logger.info("relaying signaling on %s", bound)
    async with server:
        await server.serve_forever()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=1234)
    parser.add_argument("--secret", default=None, help=f"shared secret (default ${SECRET_ENV})")
    parser.add_argument(
        "--insecure", action="store_true",
        help="run without a secret: anyone who can reach the port may join any room",
    )  # fmt: skip
    parser.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--handshake-timeout-s", type=float, default=HANDSHAKE_TIMEOUT_S)
    parser.add_argument("--idle-timeout-s", type=float, default=IDLE_TIMEOUT_S)
    args = parser.parse_args(argv)
    secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV)
    args.secret = secret.encode("utf-8") if secret else None
    if args.secret is None and not args.insecure:
        parser.error(f"no secret: give --secret or set {SECRET_ENV} (or run with --insecure)")
    if args.secret is not None and args.insecure:
        parser.error("--insecure and a secret exclude each other")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.insecure:
        logger.warning("no secret (--insecure): anyone who can reach this port may join any room")
    limits = RelayLimits(
        args.max_line_bytes, args.max_connections, args.handshake_timeout_s, args.idle_timeout_s
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(Relay(args.secret, limits), args.host, args.port))


if __name__ == "__main__":
    main()
