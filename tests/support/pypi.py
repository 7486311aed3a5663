"""A private package index on 127.0.0.1 that demands a token, serving one pure-Python wheel."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, VERSION = "mreg-private-demo", "1.0.0"
MODULE = NAME.replace("-", "_")
WHEEL = f"{MODULE}-{VERSION}-py3-none-any.whl"


def build_wheel() -> bytes:
    """A minimal, valid wheel of `mreg-private-demo` (module `mreg_private_demo`)."""
    dist_info = f"{MODULE}-{VERSION}.dist-info"
    files = {
        f"{MODULE}/__init__.py": f'VERSION = "{VERSION}"\n'.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: mreg-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


class PrivateIndex:
    """A PEP 503 simple index requiring HTTP basic auth `mreg:<token>`; `url` carries the credentials."""

    def __init__(self, token: str, *, delay: float = 0.0) -> None:
        self.token = token
        self.wheel = build_wheel()
        self.requests: list[str] = []
        expected = "Basic " + base64.b64encode(f"mreg:{token}".encode()).decode()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                index.requests.append(self.path)
                time.sleep(delay)  # a slow index, to interrupt mreg while it waits
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.end_headers()
                    return
                sha = hashlib.sha256(index.wheel).hexdigest()
                pages = {
                    "/simple/": f'<a href="{NAME}/">{NAME}</a>'.encode(),
                    f"/simple/{NAME}/": f'<a href="/files/{WHEEL}#sha256={sha}">{WHEEL}</a>'.encode(),
                    f"/files/{WHEEL}": index.wheel,
                }
                body = pages.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                kind = "application/octet-stream" if self.path.endswith(".whl") else "text/html"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://mreg:{token}@127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> PrivateIndex:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
