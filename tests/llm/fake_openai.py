"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, with scripted replies.

Each request to ``POST /v1/chat/completions`` is recorded (headers, JSON body, arrival time) and answered by the
``responder``: a function of the request body returning a :class:`Step` (status, assistant content or raw body,
headers, delay). It can also misbehave the way real gateways and proxies do: a raw body of any content type (an
HTML error page, truncated or empty JSON), the request's ``Authorization`` header echoed into the answer or an error
body, and a hung endpoint that sends its headers and then trickles the body a byte at a time (a read timeout never
fires on it). The server is bounded: after ``max_requests`` it answers 400 (never retried by the client), and delays
and trickles are capped, so a wrong client cannot loop or hang a test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_DELAY_S = 5.0


ECHO = "{AUTH}"  # replaced by the request's Authorization header in content, raw bodies and error messages


@dataclass
class Step:
    """How to answer one request: ``content`` (the assistant message) with ``status`` 200, or an error ``status``
    with an OpenAI-style error body; ``headers`` (e.g. Retry-After); ``delay_s`` before answering.

    ``raw`` replaces the whole body (sent with ``content_type``); ``trickle_s`` sends the headers at once, then the
    body one byte every 0.2 s for that long (capped at :data:`MAX_DELAY_S`). :data:`ECHO` in ``content``, ``raw``
    or ``error`` becomes the request's ``Authorization`` header, as a gateway that echoes requests would write it."""

    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str = "stop"
    error: str = "scripted error"
    raw: bytes | str | None = None
    content_type: str = "application/json"
    trickle_s: float = 0.0


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]
    t: float


def clip_data(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON data block of a correction request (between ``<clip_data>`` and ``</clip_data>``)."""
    user = body["messages"][-1]["content"]
    if isinstance(user, list):
        user = next(p["text"] for p in user if p.get("type") == "text")
    m = re.search(r"<clip_data>\s*(.*?)\s*</clip_data>", user, re.S)
    assert m, "no <clip_data> block in the user message"
    return json.loads(m.group(1))


class FakeOpenAI:
    """The server; ``url`` is the base URL to configure (``http://127.0.0.1:<port>/v1``).

    Attributes:
        requests: every request received, in arrival order.
        json_schema_supported: when False, a request with a ``json_schema`` response format gets a 400.
        in_flight_max: the most requests being handled at once.
    """

    def __init__(self, responder: Callable[[dict[str, Any]], Step] | None = None, max_requests: int = 200):
        self.responder = responder or (lambda body: Step(content="{}"))
        self.max_requests = max_requests
        self.requests: list[Recorded] = []
        self.json_schema_supported = True
        self.in_flight = 0
        self.in_flight_max = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with fake._lock:
                    fake.requests.append(Recorded({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
                    count = len(fake.requests)
                    fake.in_flight += 1
                    fake.in_flight_max = max(fake.in_flight_max, fake.in_flight)
                try:
                    if not self.path.endswith("/chat/completions"):
                        return self._send(404, {"error": {"message": "not found"}})
                    if count > fake.max_requests:
                        return self._send(400, {"error": {"message": "script exhausted", "type": "invalid_request_error"}})
                    fmt = (body.get("response_format") or {}).get("type")
                    if fmt == "json_schema" and not fake.json_schema_supported:
                        return self._send(400, {"error": {"message": "response_format json_schema is not supported",
                                                          "type": "invalid_request_error", "param": "response_format"}})
                    step = fake.responder(body)
                    auth = self.headers.get("authorization", "")
                    if step.delay_s:
                        time.sleep(min(step.delay_s, MAX_DELAY_S))
                    if step.trickle_s:
                        return self._trickle(step)
                    if step.raw is not None:
                        raw = step.raw if isinstance(step.raw, bytes) else step.raw.replace(ECHO, auth).encode()
                        return self._send_raw(step.status, raw, step.content_type, step.headers)
                    if step.status != 200:
                        return self._send(step.status, {"error": {"message": step.error.replace(ECHO, auth),
                                                                  "type": "server_error"}}, step.headers)
                    content = (step.content or "").replace(ECHO, auth)
                    prompt_tokens = sum(len(json.dumps(m["content"])) for m in body.get("messages", [])) // 4
                    self._send(200, {
                        "id": f"chatcmpl-{count}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": step.finish_reason}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                                  "total_tokens": prompt_tokens + len(content) // 4},
                    }, step.headers)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _trickle(self, step: Step) -> None:
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": step.content or ""}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    t_end = time.monotonic() + min(step.trickle_s, MAX_DELAY_S)
                    for i in range(len(data)):
                        if time.monotonic() >= t_end:
                            break  # give up mid-body: the client sees a truncated read
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                    self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def word_runs(data: dict[str, Any]) -> list[dict[str, str]]:
    """The clip's ASR words as utterances (one per run of one speaker): an answer that changes nothing."""
    out: list[dict[str, str]] = []
    for w in data["words"]:
        if out and out[-1]["speaker"] == w["speaker"]:
            out[-1]["text"] += ("" if data["language"] == "zh" else " ") + w["text"]
        else:
            out.append({"speaker": w["speaker"], "text": w["text"]})
    return out


def answer(data: dict[str, Any], utterances: list[dict[str, str]] | None = None, **overrides: Any) -> str:
    """A well-formed answer for the clip of ``data`` (its own words unless ``utterances`` are given)."""
    utts = utterances if utterances is not None else word_runs(data)
    speakers = sorted({u["speaker"] for u in utts})
    body = {
        "reasoning": "Step 1: the words read naturally. Step 2: the speaker labels match the turns.",
        "utterances": utts,
        "emotion": "neutral",
        "emotion_confidence": 0.8,
        "speakers": [{"speaker": s, "gender": "female", "age_group": "young_adult", "timbre": ["bright", "warm"]}
                     for s in speakers],
        "clue": "calm, matter-of-fact delivery",
        "scene_type": "monologue" if len(speakers) == 1 else "dialogue",
        "confidence": 0.95,
    }
    body.update(overrides)
    return json.dumps(body, ensure_ascii=False)
