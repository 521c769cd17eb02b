"""The vendor's listening socket: every connection it accepts sends small writes at once (TCP_NODELAY).

Without it a keep-alive response, written as headers then body, waited for the client's delayed ACK: 40 ms on
every request after a connection's first (measured: /health 44 ms instead of 1 ms)."""

from __future__ import annotations

import asyncio
import socket

from teacher_service.server import _listen


def test_connections_the_vendor_accepts_have_nagle_off():
    listening = _listen("127.0.0.1", 0)
    port = listening.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listening)  # what uvicorn does with it
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            while not seen:
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 10))
    assert seen == [1]
