"""Signaling: how the two peers swap their session descriptions.

aiortc's conventions (`--signaling tcp-socket|unix-socket|copy-and-paste`, `--signaling-host`,
`--signaling-port`, `--signaling-path`): with a socket, the side that sends first (the
sender's offer) listens and the receiver connects. `--signaling relay` is for when neither side
can listen: both connect to `python peers/signaling_server.py`, which passes lines between them.
"""

from __future__ import annotations

import argparse
import asyncio

from aiortc.contrib.signaling import (
    BaseSignaling,
    CopyAndPasteSignaling,
    TcpSocketSignaling,
    UnixSocketSignaling,
    object_from_string,
    object_to_string,
)

SIGNALING_METHODS = ("tcp-socket", "unix-socket", "copy-and-paste", "relay")
DEFAULT_SIGNALING_PORT = 1234


class RelaySignaling(BaseSignaling):
    """Both peers connect as clients to a line relay (peers/signaling_server.py)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def receive(self):  # type: ignore[no-untyped-def]
        await self.connect()
        assert self._reader is not None
        try:
            data = await self._reader.readuntil()
        except asyncio.IncompleteReadError:
            return None
        return object_from_string(data.decode("utf8"))

    async def send(self, descr) -> None:  # type: ignore[no-untyped-def]
        await self.connect()
        assert self._writer is not None
        self._writer.write(object_to_string(descr).encode("utf8") + b"\n")
        await self._writer.drain()


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
        "--ice-server", action="append", default=[], metavar="URL[,USER,CREDENTIAL]",
        help="STUN/TURN server (repeatable); none by default: LAN and loopback need none",
    )  # fmt: skip


def create_signaling(args: argparse.Namespace) -> BaseSignaling:
    if args.signaling == "tcp-socket":
        return TcpSocketSignaling(args.signaling_host, args.signaling_port)
    if args.signaling == "unix-socket":
        return UnixSocketSignaling(args.signaling_path)
    if args.signaling == "relay":
        return RelaySignaling(args.signaling_host, args.signaling_port)
    return CopyAndPasteSignaling()
