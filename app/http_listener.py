"""Accepting HTTP connections a burst at a time, on either event loop, for aiohttp's runners.

uvloop runs on libuv, which since 1.45 accepts one connection per turn of the event loop (libuv pull request
3696). A loaded API turns its loop a few hundred times a second at most, each turn busy with requests, so a
burst of new connections (a client pool growing under load, a load balancer reconnecting after a deploy)
overflows the kernel's listen queue. The kernel then drops the connection attempts and the clients retry
after 1 s, 3 s, 7 s: at 1,000 deposits/s on uvloop, about 15,000 listen-queue overflows in 10 s and a
twentieth of the requests timed out (docs/BENCHMARKS.md, HTTP API, seventh session). asyncio's own server
accepts up to its backlog at each readiness of the listening socket, and so does this site, on both loops:
it accepts up to `accept_burst_max` connections whenever the socket is readable and hands each to aiohttp's
protocol through `loop.connect_accepted_socket`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from aiohttp import web

log = logging.getLogger(__name__)

# After the process ran out of file descriptors or buffers, accepting waits this long before it tries again
# (asyncio's own server waits the same): the waiting connections stay in the kernel's queue meanwhile.
ACCEPT_RETRY_DELAY_S = 1.0
# accept() failures that mean "no resources now", not "this connection failed".
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class BurstAcceptSite(web.BaseSite):
    """A TCP site of an aiohttp runner that accepts up to `accept_burst_max` connections per readiness.

    `backlog` is the kernel's listen queue (connections completed but not yet accepted). `port` 0 binds a free
    port, read back from `port` after `start()`.
    """

    __slots__ = ("_host", "_port", "_accept_burst_max", "_socket", "_connecting", "_retry")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int,
                 accept_burst_max: int) -> None:
        super().__init__(runner, backlog=backlog)
        if accept_burst_max < 1:
            raise ValueError(f"accept_burst_max must be at least 1, not {accept_burst_max}")
        self._host = host
        self._port = port
        self._accept_burst_max = accept_burst_max
        self._socket: socket.socket | None = None
        self._connecting: set[asyncio.Task] = set()
        self._retry: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket is not None else self._port

    async def start(self) -> None:
        await super().start()
        # The host's first address (IPv4 or IPv6, e.g. "0.0.0.0", "::", "127.0.0.1"); a name that resolves to
        # several is bound on the first only.
        family, _, _, _, address = (await asyncio.get_running_loop().getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0]
        self._socket = socket.create_server(address, family=family, backlog=self._backlog)
        self._socket.setblocking(False)
        asyncio.get_running_loop().add_reader(self._socket.fileno(), self._accept_burst)

    async def stop(self) -> None:
        """Stop accepting and close the listening socket; open connections are the runner's to shut down."""
        if self._socket is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._socket.fileno())
            if self._retry is not None:
                self._retry.cancel()
            self._socket.close()
            self._socket = None
        for task in list(self._connecting):
            task.cancel()
        self._runner._unreg_site(self)

    def _accept_burst(self) -> None:
        listening = self._socket
        if listening is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(self._accept_burst_max):
            try:
                connection, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while it waited in the queue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                log.warning("http accept paused for %.1f s: %s", ACCEPT_RETRY_DELAY_S, exc)
                loop.remove_reader(listening.fileno())
                self._retry = loop.call_later(ACCEPT_RETRY_DELAY_S, self._resume)
                return
            connection.setblocking(False)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(loop.connect_accepted_socket(self._runner.server, connection))
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The client reset the connection before the transport was set up: nothing to answer.
            log.debug("http connection not set up: %r", task.exception())

    def _resume(self) -> None:
        self._retry = None
        if self._socket is not None:
            asyncio.get_running_loop().add_reader(self._socket.fileno(), self._accept_burst)
