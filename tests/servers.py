"""Real servers on 127.0.0.1 for the download, Images API and S3 tests."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    def __init__(self, handler_class) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FileServer(_Server):
    """Serves ``files`` (path -> bytes) with Range support; ``cut_first`` cuts the first response short.

    ``fault`` makes it misbehave as real servers and proxies do: ``"short"`` announces the whole
    Content-Length but sends half and closes, on every request; ``"ignore_offset"`` answers a
    Range request with 206 and the body from byte 0 (its Content-Range says so).
    A Range that starts at or past the end gets 416, as RFC 9110 says.
    """

    def __init__(self, files: dict[str, bytes], cut_first: int | None = None, fault: str | None = None) -> None:
        super().__init__(_FileHandler)
        self.files, self.cut_first, self.fault = files, cut_first, fault


class _FileHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests.append({"path": self.path, "range": self.headers.get("Range")})
        body = owner.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if owner.fault == "ignore_offset":
                start = 0
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if owner.fault == "short":
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if owner.cut_first is not None and len(owner.requests) == 1:
            self.wfile.write(chunk[: owner.cut_first])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-transfer
            return
        self.wfile.write(chunk)


class ImagesAPIServer(_Server):
    """The Images API ``variations`` contract: multipart PNG in, base64 PNG out.

    ``script`` lists status codes to answer before succeeding (e.g. [429, 500]).
    """

    def __init__(self, script: list[int] | None = None, key: str = "") -> None:
        super().__init__(_ImagesHandler)
        self.script = list(script or [])
        self.key = key


class _ImagesHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw)
        fields = {part.get_param("name", header="content-disposition"): part.get_content()
                  for part in message.iter_parts()}
        owner.requests.append({"path": self.path, "fields": sorted(fields),
                               "auth_ok": self.headers.get("Authorization") == f"Bearer {owner.key}"})
        if self.path != "/v1/images/variations" or "image" not in fields:
            self._json(400, {"error": {"message": "bad request"}})
            return
        if not owner.requests[-1]["auth_ok"]:
            self._json(401, {"error": {"message": "invalid key"}})
            return
        if owner.script:
            status = owner.script.pop(0)
            self._json(status, {"error": {"message": f"scripted {status}"}}, retry_after="0")
            return
        source = Image.open(io.BytesIO(fields["image"])).convert("RGB")
        variation = Image.eval(source.resize((64, 64)), lambda v: 255 - v)  # a deterministic "variation"
        buffer = io.BytesIO()
        variation.save(buffer, "PNG")
        self._json(200, {"created": 0, "data": [{"b64_json": base64.b64encode(buffer.getvalue()).decode()}]})

    def _json(self, status: int, payload: dict, retry_after: str | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(body)
