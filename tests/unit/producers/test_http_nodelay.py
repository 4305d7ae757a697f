"""The HTTP front's connections send without Nagle's delay.

asyncio turns TCP_NODELAY on only for sockets whose protocol says TCP; a
listening socket made with protocol 0 passed that on to every accepted
connection, and a client on a kept-alive connection waited ~40 ms for each
answer (the body held back until the client's delayed ACK of the head).
"""

from __future__ import annotations

import asyncio
import socket

from cachet.producers.http.server import _bind


def test_the_listening_socket_says_tcp() -> None:
    sock = _bind("127.0.0.1", 0, "http")
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_an_accepted_connection_has_nagle_off() -> None:
    async def nodelay_of_accepted() -> int:
        sock = _bind("127.0.0.1", 0, "http")
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                s = transport.get_extra_info("socket")
                accepted.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()

    assert asyncio.run(nodelay_of_accepted()) != 0
