"""A fault-injecting TCP proxy: put it between a store and its server, then break the link.

    with FaultProxy("127.0.0.1", server_port) as proxy:   # listens on 127.0.0.1:proxy.port at once
        store = make_store("127.0.0.1", proxy.port)
        proxy.set_mode("blackhole")                        # the server looks frozen
        ...
        proxy.set_mode("pass")                             # and healthy again

Modes (``set_mode`` returns once the mode is in force for every connection, old and new):

- ``pass``: forward both ways.
- ``latency``: deliver every chunk ``latency`` seconds after it arrived, both ways (so a request
  and its reply take ``2 * latency`` more); order is kept and chunks are pipelined, not serialized.
- ``blackhole``: keep every connection open (new ones are accepted too) but deliver nothing. The
  data is held, as a frozen server's kernel would hold it, and delivered when the mode allows it
  again (``pass`` or ``latency``): a client that gave up on a request must not reuse its connection.
- ``reset``: close every connection, existing and new, with an RST toward the client
  (``SO_LINGER`` 0: the client sees "connection reset by peer").
- ``half_close``: shut the write side toward the client (the client reads EOF) while the client's
  writes still reach the server, which stays connected. Connections opened while the mode is on
  are half-closed at once; a half-closed connection stays so after the mode changes.

The proxy runs an asyncio loop in a daemon thread; the methods are thread-safe and may be called
from any thread or event loop (they block briefly while the proxy thread applies the change).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable
from types import TracebackType
from typing import Literal, TypeVar, get_args

Mode = Literal["pass", "latency", "blackhole", "reset", "half_close"]
MODES: tuple[str, ...] = get_args(Mode)

CHUNK_BYTES = 65536
UPSTREAM_CONNECT_TIMEOUT = 5.0  # seconds to reach the real server before the client gets an RST
CONTROL_TIMEOUT = 10.0  # seconds a control call waits for the proxy thread

_T = TypeVar("_T")


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"):
        self.target_host = target_host
        self.target_port = target_port
        self._mode: Mode = "pass"
        self._latency = 0.0
        self._links: set[_Link] = set()
        self._sock = socket.create_server((listen_host, 0))
        self.host: str = listen_host
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._changed = asyncio.Event()  # set (and replaced) at every mode change
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"FaultProxy:{self.port}", daemon=True
        )
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, sock=self._sock))
        self._closed = False

    # -- control (any thread) ---------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def set_mode(self, mode: Mode, latency: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self._call(self._set_mode(mode, latency))

    def connection_count(self) -> int:
        """Connections the proxy holds now (client side accepted, not yet closed)."""
        return len(self._links)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coro: Awaitable[_T]) -> _T:
        async def run() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(CONTROL_TIMEOUT)

    # -- proxy thread -----------------------------------------------------------------------

    async def _set_mode(self, mode: Mode, latency: float) -> None:
        self._mode, self._latency = mode, latency
        self._changed.set()
        self._changed = asyncio.Event()
        for link in list(self._links):
            if mode == "reset":
                link.reset()
            elif mode == "half_close":
                link.half_close()

    async def _shutdown(self) -> None:
        self._server.close()
        for link in list(self._links):
            link.reset()
        for link in list(self._links):
            await link.finished()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "reset":
            _abort_with_rst(writer)
            return
        link = _Link(self, reader, writer)
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)

    async def gate(self, arrived: float) -> None:
        """Return when a chunk that arrived at ``arrived`` (loop time) may be delivered."""
        while True:
            changed = self._changed
            if self._mode == "blackhole":
                await changed.wait()
                continue
            if self._mode == "latency":
                delay = arrived + self._latency - self._loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), delay)
                    continue
            return


class _Link:
    """One client connection and its connection to the real server."""

    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.proxy = proxy
        self.client_r, self.client_w = reader, writer
        self.server_w: asyncio.StreamWriter | None = None
        self.half_closed = False
        self.dead = False
        self._done = asyncio.Event()
        self._task = asyncio.current_task()

    async def run(self) -> None:
        try:
            try:
                server_r, server_w = await asyncio.wait_for(
                    asyncio.open_connection(self.proxy.target_host, self.proxy.target_port),
                    UPSTREAM_CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError):
                self.reset()
                return
            self.server_w = server_w
            if self.dead:  # reset while connecting
                server_w.transport.abort()
                return
            if self.proxy.mode == "half_close":
                self.half_close()
            await asyncio.gather(
                self._pipe(self.client_r, server_w, toward_client=False),
                self._pipe(server_r, self.client_w, toward_client=True),
            )
        except asyncio.CancelledError:
            pass
        finally:
            self.client_w.transport.abort()  # idempotent; a pipe may have ended by an error
            if self.server_w is not None:
                self.server_w.transport.abort()
            self._done.set()

    async def finished(self) -> None:
        await self._done.wait()

    def reset(self) -> None:
        if self.dead:
            return
        self.dead = True
        _abort_with_rst(self.client_w)
        if self.server_w is not None:
            self.server_w.transport.abort()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def half_close(self) -> None:
        if self.half_closed or self.dead:
            return
        self.half_closed = True
        with contextlib.suppress(OSError, RuntimeError):
            if not self.client_w.is_closing():
                self.client_w.write_eof()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, toward_client: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(CHUNK_BYTES):
                    queue.put_nowait((loop.time(), data))
            except OSError:
                self.reset()
            queue.put_nowait((loop.time(), b""))

        reader_task = asyncio.create_task(read())
        try:
            while True:
                arrived, data = await queue.get()
                await self.proxy.gate(arrived)
                if toward_client and self.half_closed:
                    if not data:
                        return
                    continue  # the client's read side is shut: drop
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if not writer.is_closing():
                            writer.write_eof()
                    return
                writer.write(data)
                try:
                    await writer.drain()
                except OSError:
                    self.reset()
                    return
        finally:
            reader_task.cancel()
