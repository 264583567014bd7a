"""A TCP proxy that can be switched off and on, to make a real server 'go down' and 'come
back' without restarting it. While off, new connections are refused-by-close and open ones cut."""

from __future__ import annotations

import asyncio
import contextlib


class SwitchableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.up = True
        self.hang = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    def set_up(self, up: bool) -> None:
        self.up = up
        if not up:
            for task in list(self._tasks):
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        task = asyncio.current_task()
        assert task
        self._tasks.add(task)
        try:
            if self.hang:
                # Accept, never answer: a server stuck rather than gone.
                await asyncio.sleep(3600)
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class ThreadedProxy:
    """A SwitchableProxy on its own event loop thread, so it keeps serving while the test's
    loop is blocked or between tests."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._proxy = SwitchableProxy(target_host, target_port)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._proxy.start(), self._loop).result(5)
        self.port = self._proxy.port

    def set_up(self, up: bool) -> None:
        self._loop.call_soon_threadsafe(self._proxy.set_up, up)

    def set_hang(self, hang: bool) -> None:
        self._loop.call_soon_threadsafe(setattr, self._proxy, "hang", hang)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._proxy.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
