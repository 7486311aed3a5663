"""A TCP proxy on 127.0.0.1 that can go down like a stopped server, for fault tests."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable


class Proxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target` (or, `stalled`, accepts and never answers).

    `down()` closes every connection and stops listening: clients see resets and refused connections,
    exactly as if the server process had stopped. `up()` listens again on the same port. With
    `down_after_bytes`, the proxy goes down by itself once that many request bytes went through, and
    `on_down` is called (e.g. to schedule `up()`).
    """

    def __init__(
        self,
        target: int,
        *,
        down_after_bytes: int | None = None,
        on_down: Callable[[], None] | None = None,
        stalled: bool = False,
    ):
        self.target = target
        self.stalled = stalled
        """Accept connections but forward nothing: a server that hangs."""
        self.down_after_bytes = down_after_bytes
        self.on_down = on_down
        self.forwarded = 0
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()

    def __enter__(self) -> Proxy:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):  # shutdown() wakes the threads blocked on it; linger 0 resets
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.stalled:
                with self._lock:
                    self._connections.append(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                if upstream and self._count(len(chunk)):
                    return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _count(self, size: int) -> bool:
        with self._lock:
            self.forwarded += size
            tripped = self.down_after_bytes is not None and self.forwarded >= self.down_after_bytes
            if tripped:
                self.down_after_bytes = None
        if tripped:
            self.down()
            if self.on_down is not None:
                self.on_down()
        return tripped


def up_again_after(proxy: Proxy, seconds: float) -> Callable[[], None]:
    """An `on_down` callback that brings the proxy back after `seconds` (a server restarting)."""

    def schedule() -> None:
        def restart() -> None:
            time.sleep(seconds)
            proxy.up()

        threading.Thread(target=restart, daemon=True).start()

    return schedule
