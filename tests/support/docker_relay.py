"""A second endpoint for the Docker Engine: a unix socket that relays to the engine's own and records the
API requests that pass through it, so a test can tell which Docker endpoint a command really used."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

REQUEST_LINE = re.compile(rb"(?:GET|HEAD|POST|PUT|DELETE) (?:/v[0-9.]+)?(/[^ ?\r\n]*)[^ \r\n]* HTTP/1\.[01]\r\n")


class DockerRelay:
    """Listens on `path` and forwards every connection to the engine at `target` (a unix socket path).

    `paths` lists the API paths of the requests seen (version prefix and query removed), in order.
    """

    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.target = target
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> DockerRelay:
        self._listener.bind(str(self.path))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def seen(self, pattern: str) -> bool:
        """Whether some request's path matched `pattern` (a regular expression)."""
        with self._lock:
            return any(re.fullmatch(pattern, path) for path in self.paths)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as engine:
            engine.connect(self.target)
            answers = threading.Thread(target=self._pump, args=(engine, client, False), daemon=True)
            answers.start()
            self._pump(client, engine, True)
            answers.join()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if requests:  # request lines may straddle two reads: search the end of the previous one too
                    window = tail + data
                    found = [m.group(1).decode() for m in REQUEST_LINE.finditer(window) if m.end() > len(tail)]
                    with self._lock:
                        self.paths.extend(found)
                    tail = window[-512:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
