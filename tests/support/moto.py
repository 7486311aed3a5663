"""moto's S3 server on 127.0.0.1, serving one request at a time.

moto checks `If-None-Match` / `If-Match` and then writes, without a lock; AWS S3 and MinIO make the pair
atomic. Serving requests one at a time gives moto the same atomicity, so the concurrency tests exercise
mreg's compare-and-swap logic rather than moto's race. (Benchmarks use the threaded server.)
"""

from __future__ import annotations

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class SerialMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer (a background thread), but one request at a time."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, app, False, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()
