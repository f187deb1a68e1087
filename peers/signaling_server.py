"""A stand-alone signaling relay for when neither peer can listen.

    python peers/signaling_server.py --host 0.0.0.0 --port 1234
    talkcodec send --video clip.mp4 --signaling relay --signaling-host RELAY_HOST   # one machine
    talkcodec receive --signaling relay --signaling-host RELAY_HOST                 # the other

Pairs connections two by two and passes each newline-terminated line from one to the other
(aiortc's signaling messages are one JSON object per line). Lines sent before the partner
arrives are held. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

logger = logging.getLogger("signaling_server")
MAX_LINE_BYTES = 1 << 20  # session descriptions are a few kB


class Relay:
    def __init__(self) -> None:
        self._partner: dict[asyncio.StreamWriter, asyncio.Future[asyncio.StreamWriter]] = {}
        self._lonely: asyncio.StreamWriter | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        partner: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()
        self._partner[writer] = partner
        if self._lonely is None:
            self._lonely = writer
            logger.info("peer waiting for a partner")
        else:
            other, self._lonely = self._lonely, None
            self._partner[other].set_result(writer)
            partner.set_result(other)
            logger.info("paired two peers")
        try:
            while line := await reader.readline():
                target = await partner
                target.write(line)
                await target.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as error:
            logger.info("peer dropped: %s", error)
        finally:
            if self._lonely is writer:
                self._lonely = None
            if partner.done():
                partner.result().close()
            del self._partner[writer]
            writer.close()


async def serve(host: str, port: int) -> None:
    relay = Relay()
    server = await asyncio.start_server(relay.handle, host, port, limit=MAX_LINE_BYTES)
    logger.info("relaying signaling on %s:%d", host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=1234)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
