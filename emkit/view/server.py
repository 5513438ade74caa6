"""A small HTTP server that lets a browser read local Precomputed folders.

Neuroglancer runs in the browser and fetches ``info`` and chunk files over HTTP, so a local
``file://`` layer must be served. This server:

* binds to 127.0.0.1 by default (nothing is exposed to the network unless asked);
* mounts each local folder under its own random path prefix (``/<token>/<n>/...``) and refuses
  anything outside the mounted folders;
* sends CORS headers (the viewer page is served from another port);
* serves gzip-compressed chunks: when ``foo`` is missing and ``foo.gz`` exists, it sends
  ``foo.gz`` with ``Content-Encoding: gzip`` (emkit gzips float layers on disk; Neuroglancer's
  own static server answers 404 for them, ``stack.md`` pitfall 2);
* answers 404 for missing chunks, which Neuroglancer draws as empty (like ``fill_missing``);
* remembers the last requests (:meth:`FileServer.requests`): which files a viewer fetched.
"""
from __future__ import annotations

import collections
import http.server
import os
import re
import secrets
import socket
import threading
import urllib.parse

from ..errors import InputError

__all__ = ["FileServer"]

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "x-requested-with, range",
    "Access-Control-Expose-Headers": "content-range, content-length, content-encoding",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    def _cors(self) -> None:
        for k, v in _CORS.items():
            self.send_header(k, v)

    def _error(self, code: int) -> None:
        self.server.record(self.path, code)
        body = f"{code}\n".encode()
        self.send_response(code)
        self._cors()
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server naming
        self.send_response(204)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.server.resolve(self.path)
        if path is None:
            return self._error(404)
        encoding = None
        if not os.path.isfile(path):
            if os.path.isfile(path + ".gz"):
                path, encoding = path + ".gz", "gzip"
            else:
                return self._error(404)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return self._error(404)
        status, extra = 200, {}
        m = _RANGE.match(self.headers.get("Range", "").strip())
        if m and not encoding and (m.group(1) or m.group(2)):  # sharded layers read byte ranges
            n = len(data)
            if m.group(1):
                a, b = int(m.group(1)), min(int(m.group(2) or n - 1), n - 1)
            else:
                a, b = max(n - int(m.group(2)), 0), n - 1
            if a > b:
                return self._error(416)
            data, status = data[a:b + 1], 206
            extra["Content-Range"] = f"bytes {a}-{b}/{n}"
        self.server.record(self.path, status)
        self.send_response(status)
        self._cors()
        for k, v in extra.items():
            self.send_header(k, v)
        name = os.path.basename(path[:-3] if encoding else path)
        ctype = "application/json" if name in ("info", "provenance") or name.endswith(".json") else \
            "application/octet-stream"
        self.send_header("Content-Type", ctype)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, token: str, verbose: bool):
        self.token = token
        self.verbose = verbose
        self.mounts: dict[str, str] = {}
        self.log: collections.deque = collections.deque(maxlen=100_000)
        super().__init__(addr, _Handler)

    def record(self, raw_path: str, status: int) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == self.token:
            self.log.append((parts[1], "/".join(parts[2:]), status))

    def resolve(self, raw_path: str) -> str | None:
        """Filesystem path for a request path, or None when it is outside every mount."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != self.token or parts[1] not in self.mounts:
            return None
        root = self.mounts[parts[1]]
        full = os.path.realpath(os.path.join(root, *parts[2:]))
        if full != root and not full.startswith(root + os.sep):
            return None  # ../ escapes
        return full


class FileServer:
    """Serve local folders over HTTP with CORS and ``.gz`` fallback, in a background thread.

    Parameters
    ----------
    bind : str
        Address to listen on; default ``127.0.0.1`` (this machine only).
    port : int
        Port; 0 picks a free one.
    verbose : bool
        Log each request to stderr.

    Examples
    --------
    >>> srv = FileServer()                                  # doctest: +SKIP
    >>> srv.url_for("/data/phantom/image")                  # doctest: +SKIP
    'http://127.0.0.1:40123/3f9c…/0'
    >>> srv.stop()                                          # doctest: +SKIP
    """

    def __init__(self, bind: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.token = secrets.token_hex(8)
        try:
            self._httpd = _HTTPServer((bind, int(port)), self.token, verbose)
        except OSError as exc:
            raise InputError(f"cannot listen on {bind}:{port}: {exc}") from None
        self.bind = bind
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="emkit-file-server", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        # listening on every interface: name this machine, as Neuroglancer's own server does
        host = socket.getfqdn() if self.bind in ("", "0.0.0.0", "::") else self.bind
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/{self.token}"

    def url_for(self, folder: str | os.PathLike) -> str:
        """HTTP URL under which ``folder`` (a local directory) is served; mounts it if needed."""
        root = os.path.realpath(os.fspath(folder))
        if not os.path.isdir(root):
            raise InputError(f"cannot serve {folder!r}: not a folder")
        mounts = self._httpd.mounts
        for key, path in mounts.items():
            if path == root:
                return f"{self.base_url}/{key}"
        key = str(len(mounts))
        mounts[key] = root
        return f"{self.base_url}/{key}"

    def requests(self, folder: str | os.PathLike | None = None) -> list[tuple[str, int]]:
        """The requests answered so far (GET/HEAD, last 100 000), oldest first, as
        ``(path, HTTP status)``: ``path`` relative to ``folder`` when given (only that folder's
        requests), else ``"<mount>/<path>"``."""
        log = list(self._httpd.log)
        if folder is None:
            return [(f"{k}/{p}", st) for k, p, st in log]
        root = os.path.realpath(os.fspath(folder))
        keys = {k for k, path in self._httpd.mounts.items() if path == root}
        return [(p, st) for k, p, st in log if k in keys]

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FileServer({self.base_url!r}, folders={len(self._httpd.mounts)})"
