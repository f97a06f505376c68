"""Hear a clip while reviewing it: a small HTTP server on 127.0.0.1 that serves clip audio from an output folder.

The review form links every clip to ``http://127.0.0.1:<port>/clip?out=<output folder>&id=<clip id>``
(:func:`listen_url`): a page with the clip's heading, its text and an audio player. ``&audio=1`` returns the audio
itself (the FLAC bytes of the clip's ``audio_vocals`` column in the latest shard version, ``audio/flac``; browsers
play FLAC natively), which the V1 Prefect UI also plays inline in the form. ``GET /health`` answers ``ok``.

It works offline and reads nothing but shard rows: ``out`` must be a folder holding ``manifest.json`` (and, when the
server was given ``roots``, lie under one of them), ``id`` must be a clip id (a UUID), and only that clip's row is
read. It binds to 127.0.0.1 only. ``cinedub review-serve`` and ``cinedub serve`` start it
(:data:`DEFAULT_LISTEN_PORT`, or ``CINEDUB_LISTEN_PORT``).
"""

from __future__ import annotations

import html
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

log = logging.getLogger("cinedub.llm")

DEFAULT_LISTEN_PORT = 4210
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def listen_port() -> int:
    """The clip server's port: ``$CINEDUB_LISTEN_PORT``, default 4210."""
    return int(os.environ.get("CINEDUB_LISTEN_PORT", DEFAULT_LISTEN_PORT))


def listen_base_url() -> str:
    """``$CINEDUB_LISTEN_URL``, else ``http://127.0.0.1:$CINEDUB_LISTEN_PORT`` (default port 4210)."""
    url = os.environ.get("CINEDUB_LISTEN_URL")
    if url:
        return url.rstrip("/")
    return f"http://127.0.0.1:{listen_port()}"


def start_listener(port: int | None = None) -> ListenServer | None:
    """A started :class:`ListenServer` on ``port`` (default :func:`listen_port`), or None when the port is taken
    (another ``serve`` or ``review-serve`` already serves clips there)."""
    try:
        return ListenServer(port or listen_port()).start()
    except OSError:
        return None


def listen_url(base: str, out_dir: str | Path, clip_id: str) -> str:
    """The listening page of one clip (``base`` from :func:`listen_base_url` or :attr:`ListenServer.url`)."""
    return f"{base.rstrip('/')}/clip?{urlencode({'out': str(Path(out_dir).resolve()), 'id': clip_id})}"


def is_listening(base: str, timeout_s: float = 2.0) -> bool:
    """True when a clip server answers ``GET <base>/health``."""
    import httpx

    try:
        return httpx.get(f"{base.rstrip('/')}/health", timeout=timeout_s).text.strip() == "ok"
    except httpx.HTTPError:
        return False


def _clip_row(out: Path, clip_id: str) -> dict[str, Any] | None:
    from cinedub.llm.versions import read_rows

    cols = ["clip_id", "episode", "clip_index", "start_ms", "end_ms", "language", "text", "audio_vocals"]
    rows = read_rows(out, columns=cols, clip_ids=[clip_id])
    return rows[0] if rows else None


class ListenServer:
    """The clip server (see the module docstring). ``with ListenServer(port=0) as srv: srv.url``.

    Args:
        port: TCP port on 127.0.0.1 (0 picks a free one).
        roots: if given, output folders must lie under one of these.

    Raises:
        OSError: the port is taken.
    """

    def __init__(self, port: int = DEFAULT_LISTEN_PORT, roots: list[str | Path] | None = None):
        self.roots = [Path(r).resolve() for r in roots or []]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("listen: " + fmt, *args)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                url = urlparse(self.path)
                if url.path == "/health":
                    return self._send(200, b"ok", "text/plain")
                if url.path != "/clip":
                    return self._send(404, b"not found", "text/plain")
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                out, clip_id = q.get("out", ""), q.get("id", "")
                problem = server._refuse(out, clip_id)
                if problem:
                    return self._send(400, problem.encode(), "text/plain; charset=utf-8")
                try:
                    row = _clip_row(Path(out), clip_id)
                except Exception as e:  # noqa: BLE001 - a broken folder is this request's 500, not the server's end
                    log.warning("listen: %s: %s", out, type(e).__name__)
                    return self._send(500, f"cannot read {type(e).__name__}".encode(), "text/plain")
                if row is None:
                    return self._send(404, b"no such clip in the latest version", "text/plain")
                media = row.get("audio_vocals") or {}
                if q.get("audio"):
                    if not media.get("bytes"):
                        return self._send(404, b"the clip has no audio", "text/plain")
                    return self._send(200, media["bytes"], "audio/flac")
                from cinedub.llm.review import clip_heading

                page = (
                    f"<!doctype html><meta charset='utf-8'><title>{html.escape(clip_heading(row))}</title>"
                    f"<body style='font-family:sans-serif;max-width:50em;margin:2em auto'>"
                    f"<h2>{html.escape(clip_heading(row))}</h2>"
                    f"<audio controls autoplay src='/clip?{html.escape(url.query)}&amp;audio=1'></audio>"
                    f"<p style='font-size:1.3em'>{html.escape(row.get('text') or '')}</p>"
                    f"<p style='color:#666'>Use your browser's Back button to return to the review form.</p></body>"
                )
                self._send(200, page.encode(), "text/html; charset=utf-8")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(body)))
                    self.send_header("cache-control", "no-store")
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def _refuse(self, out: str, clip_id: str) -> str | None:
        if not _UUID.match(clip_id):
            return "id must be a clip id"
        if not out or not os.path.isabs(out):
            return "out must be an absolute output folder"
        path = Path(out).resolve()
        if not (path / "manifest.json").is_file():
            return "out is not a CineDub output folder"
        if self.roots and not any(path == r or r in path.parents for r in self.roots):
            return "out is not under a served root"
        return None

    def start(self) -> "ListenServer":
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="cinedub-listen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ListenServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
