"""Fixtures for provider tests: a real local HTTP server speaking /v1/embeddings, and a tiny LLaMA on disk."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def server_vector(text: str, dim: int) -> list[float]:
    """What the fake server returns for a text: a fixed function of the text, so order can be checked."""
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32).tolist()


@dataclass
class Recorded:
    path: str
    authorization: str
    body: dict[str, Any]
    at: float


@dataclass
class FakeEmbeddingServer:
    """Answers POST /v1/embeddings. ``script`` holds actions for the next requests, then it answers normally:

    ("ok",) | ("status", code, headers, body_bytes) | ("sleep", seconds) | ("raw", content_type, body_bytes)
    | ("dim", width)
    """

    dim: int = 8
    expected_key: str = "sk-test-key"
    script: deque = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expected(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        return np.asarray([server_vector(t, dim or self.dim) for t in texts], dtype=np.float32)

    def next_action(self) -> tuple:
        with self.lock:
            return self.script.popleft() if self.script else ("ok",)

    def embeddings(self, body: dict[str, Any], dim: int) -> bytes:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, text in enumerate(inputs):
            vec = server_vector(text, dim)
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        data.reverse()  # real servers may answer out of order: the client must sort by index
        tokens = sum(len(t.split()) for t in inputs)
        return json.dumps(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        ).encode()


def _handler(server: FakeEmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(
            self,
            code: int,
            body: bytes,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            auth = self.headers.get("Authorization", "")
            with server.lock:
                server.requests.append(Recorded(self.path, auth, body, time.monotonic()))
            if not self.path.endswith("/embeddings"):
                return self._send(404, b'{"error": {"message": "not found"}}')
            if auth != f"Bearer {server.expected_key}":
                return self._send(401, b'{"error": {"message": "Incorrect API key provided"}}')
            action = server.next_action()
            dim = server.dim
            if action[0] == "status":
                _, code, headers, payload = action
                return self._send(code, payload, headers=headers)
            if action[0] == "raw":
                return self._send(200, action[2], content_type=action[1])
            if action[0] == "sleep":
                time.sleep(action[1])
            if action[0] == "dim":
                dim = action[1]
            return self._send(200, server.embeddings(body, dim))

    return Handler


@pytest.fixture
def embedding_server():
    fake = FakeEmbeddingServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from tests.providers.tiny_llama import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
