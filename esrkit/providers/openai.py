"""OpenAI embeddings (the paper's text-embedding-ada-002) and any OpenAI-compatible server (Azure, vLLM, TEI).

Why so much code around one API call: the official client neither batches, nor reorders ``data`` by ``index``,
nor checks counts or widths, and its built-in retries are not observable. Here:

* texts are truncated to the model's input limit (``prepare_texts``; the cache keys on the text actually
  sent);
* requests carry at most ``max_inputs_per_request`` inputs and ``max_tokens_per_request`` tokens;
* up to ``concurrency`` requests are in flight (a thread pool); finished batches are yielded at once so the
  pipeline commits them (an interrupted run resumes without paying twice);
* 429/408/409/5xx, timeouts and dropped connections are retried with exponential backoff and jitter, honouring
  ``retry-after-ms`` / ``Retry-After``; the client's own retries are off so this policy is the only one;
* 401/403 stop at once; malformed JSON, HTML pages, missing ``data``, wrong counts or widths raise a
  ``ProviderError`` that names the batch;
* the API key is read from the environment only and is never stored, logged or written (messages are
  redacted).

Token counts use tiktoken's ``cl100k_base`` when its BPE file is available locally (tiktoken downloads it on
first use; offline, place it in ``$TIKTOKEN_CACHE_DIR`` or point ``tiktoken_file`` at it). Otherwise the UTF-8
byte count is used: every BPE token covers at least one byte, so it is a guaranteed upper bound (safe
truncation and batching, pessimistic cost estimates). The choice is logged and recorded in the metadata.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from esrkit.providers.base import PROVIDERS, EmbeddedBatch, Provider, ProviderAuthError, ProviderError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NATIVE_DIMS = {"text-embedding-ada-002": 1536, "text-embedding-3-small": 1536, "text-embedding-3-large": 3072}
OFFICIAL_HOST_SUFFIXES = ("api.openai.com", ".openai.azure.com")
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Where tiktoken fetches its BPE files; tiktoken caches each under sha1(url) in $TIKTOKEN_CACHE_DIR.
TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


@dataclass
class OpenAIOptions:
    model: str = "text-embedding-ada-002"  # on Azure: the deployment name
    base_url: str = (
        ""  # "" = $OPENAI_BASE_URL or https://api.openai.com/v1; e.g. http://localhost:8000/v1 (vLLM)
    )
    api_key_env: str = (
        "OPENAI_API_KEY"  # NAME of the environment variable holding the key; "" = no key (local)
    )
    api_version: str = ""  # set it to use Azure OpenAI (base_url is then the Azure endpoint)
    dimensions: int = 0  # 0 = model default (not sent); text-embedding-3-* can return fewer
    dim: int = 0  # expected width; 0 = known model width, `dimensions`, or whatever the first response has
    max_inputs_per_request: int = 2048
    max_tokens_per_request: int = 300_000
    max_input_tokens: int = 8191
    tokenizer: str = "auto"  # auto (tiktoken if its BPE file is local, else UTF-8 bytes) | tiktoken | bytes
    tiktoken_encoding: str = "cl100k_base"
    tiktoken_file: str = ""  # a local copy of the .tiktoken BPE file
    encoding_format: str = "float"  # float | base64 (smaller responses)
    timeout: float = 60.0  # seconds per request
    max_retries: int = 6
    backoff_base: float = 1.0  # first backoff in seconds, doubled each retry
    backoff_max: float = 60.0
    max_retry_after: float = 300.0  # cap on a server's Retry-After
    concurrency: int = 4  # requests in flight
    usd_per_1m_tokens: float = 0.0  # price, for --dry-run cost estimates

    def __post_init__(self) -> None:
        if self.encoding_format not in ("float", "base64"):
            raise ValueError(
                f"openai provider: encoding_format must be float or base64, not {self.encoding_format!r}"
            )
        if self.tokenizer not in ("auto", "tiktoken", "bytes"):
            raise ValueError(
                f"openai provider: tokenizer must be auto, tiktoken or bytes, not {self.tokenizer!r}"
            )
        if self.max_inputs_per_request < 1 or self.max_tokens_per_request < 1 or self.max_input_tokens < 1:
            raise ValueError("openai provider: request limits must be positive")
        if self.concurrency < 1:
            raise ValueError("openai provider: concurrency must be >= 1")


# ---------------------------------------------------------------------------------------------- token
# counting
class Utf8ByteCounter:
    """Upper bound: a BPE token covers at least one byte. Used when tiktoken's BPE file is not available."""

    name = "upper bound: UTF-8 bytes, tiktoken BPE file not available"
    exact = False

    def count(self, text: str) -> int:
        return len(text.encode("utf-8"))

    def truncate(self, text: str, limit: int) -> str:
        data = text.encode("utf-8")
        if len(data) <= limit:
            return text
        return data[:limit].decode("utf-8", errors="ignore")  # drops a cut multi-byte character


class TiktokenCounter:
    exact = True

    def __init__(self, encoding: Any) -> None:
        self.encoding = encoding
        self.name = f"tiktoken:{encoding.name}"

    def count(self, text: str) -> int:
        return len(self.encoding.encode(text, disallowed_special=()))

    def truncate(self, text: str, limit: int) -> str:
        tokens = self.encoding.encode(text, disallowed_special=())
        if len(tokens) <= limit:
            return text
        return self.encoding.decode(tokens[:limit])


def tiktoken_cache_path(encoding: str) -> Path | None:
    """Where tiktoken looks for a cached BPE file (its own rule), or None for an unknown encoding."""
    url = TIKTOKEN_URLS.get(encoding)
    if url is None:
        return None
    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _install_tiktoken_file(encoding: str, source: str) -> None:
    target = tiktoken_cache_path(encoding)
    if target is None:
        raise ProviderError(
            f"tiktoken_file given for unknown encoding {encoding!r}; known: {sorted(TIKTOKEN_URLS)}"
        )
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        shutil.copyfile(os.path.expanduser(source), tmp)
        os.replace(tmp, target)


def make_token_counter(options: OpenAIOptions) -> Utf8ByteCounter | TiktokenCounter:
    if options.tokenizer == "bytes":
        return Utf8ByteCounter()
    if options.tiktoken_file:
        _install_tiktoken_file(options.tiktoken_encoding, options.tiktoken_file)
    cached = tiktoken_cache_path(options.tiktoken_encoding)
    local = cached is not None and cached.exists()
    if options.tokenizer == "auto" and not local:
        log.warning(
            "tiktoken's %s BPE file is not available offline (%s); counting UTF-8 bytes instead, an "
            "upper bound on "
            "tokens: truncation and batching stay within limits, cost estimates are pessimistic",
            options.tiktoken_encoding,
            cached,
        )
        return Utf8ByteCounter()
    try:
        import tiktoken  # optional: exact token counts when installed

        return TiktokenCounter(tiktoken.get_encoding(options.tiktoken_encoding))
    except Exception as exc:  # network failure, corrupt file
        if options.tokenizer == "tiktoken":
            raise ProviderError(f"tiktoken could not load {options.tiktoken_encoding}: {exc}") from None
        log.warning("tiktoken failed (%s); counting UTF-8 bytes instead (upper bound)", exc)
        return Utf8ByteCounter()


# ---------------------------------------------------------------------------------------------- retries
@dataclass
class RetryEvent:
    batch: int
    attempt: int
    reason: str
    wait: float


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when
    absent."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# ---------------------------------------------------------------------------------------------- batching
@dataclass
class RequestBatch:
    number: int
    indices: list[int]
    texts: list[str]
    tokens: int

    def label(self) -> str:
        return (
            f"batch {self.number} (inputs {self.indices[0]}..{self.indices[-1]}, {len(self.indices)} texts)"
        )


def plan_requests(token_counts: Sequence[int], max_inputs: int, max_tokens: int) -> list[list[int]]:
    """Consecutive groups within both limits (a single text over the token budget travels alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(token_counts):
        if current and (len(current) >= max_inputs or used + n > max_tokens):
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        groups.append(current)
    return groups


def normalise_endpoint(base_url: str) -> str:
    """The server part of the identity: official OpenAI and Azure serve the same models ("openai"); any other
    server is named by scheme, host and path, never by credentials or query strings."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if any(host == s.lstrip(".") or host.endswith(s) for s in OFFICIAL_HOST_SUFFIXES):
        return "openai"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


# ---------------------------------------------------------------------------------------------- provider
@PROVIDERS.register("openai")
class OpenAIProvider(Provider):
    kind = "openai"
    Options = OpenAIOptions

    def __init__(self, options: OpenAIOptions, name: str = "") -> None:
        super().__init__(options, name)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._counter: Utf8ByteCounter | TiktokenCounter | None = None
        self._events_lock = threading.Lock()
        self.retry_events: list[RetryEvent] = []
        self.requests_sent = 0
        self._rng = random.Random()
        self.sleep: Callable[[float], None] = time.sleep

    # -------------------------------------------------------------- identity
    @property
    def base_url(self) -> str:
        return self.options.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL

    def requested_dimensions(self) -> int | None:
        d = int(self.options.dimensions or 0)
        return None if d == 0 or d == NATIVE_DIMS.get(self.options.model) else d

    def identity_params(self) -> dict[str, Any]:
        return {"endpoint": normalise_endpoint(self.base_url), "dimensions": self.requested_dimensions()}

    def declared_dim(self) -> int | None:
        o = self.options
        return (o.dim or o.dimensions or NATIVE_DIMS.get(o.model)) or None

    # -------------------------------------------------------------- tokens
    @property
    def counter(self) -> Utf8ByteCounter | TiktokenCounter:
        if self._counter is None:
            self._counter = make_token_counter(self.options)
        return self._counter

    @property
    def tokens_exact(self) -> bool:
        return self.counter.exact

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [self.counter.count(t) for t in texts]

    def prepare_texts(self, texts: Sequence[str]) -> list[str]:
        """Truncate to the input limit; an empty input (rejected by the API) becomes one space."""
        limit = self.options.max_input_tokens
        return [self.counter.truncate(t, limit) or " " for t in texts]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["token_counter"] = self.counter.name
        return out

    # -------------------------------------------------------------- client
    def _api_key(self) -> str:
        env = self.options.api_key_env
        if not env:
            return "unused"  # local servers without authentication
        key = os.environ.get(env, "")
        if not key:
            raise ProviderAuthError(
                f"{self.name}: no API key: set the environment variable {env} (keys are read only from the "
                f"environment, never from provider files or the command line)"
            )
        return key

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import openai  # heavy optional import: the client loads with the first request

                common = dict(api_key=self._api_key(), max_retries=0, timeout=self.options.timeout)
                if self.options.api_version:
                    self._client = openai.AzureOpenAI(
                        azure_endpoint=self.base_url, api_version=self.options.api_version, **common
                    )
                else:
                    self._client = openai.OpenAI(base_url=self.base_url, **common)
            return self._client

    def load(self) -> None:
        self._get_client()

    def _redact(self, text: str) -> str:
        env = self.options.api_key_env
        key = os.environ.get(env, "") if env else ""
        return text.replace(key, "***") if key else text

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -------------------------------------------------------------- embedding
    def iter_embed(self, texts: Sequence[str]) -> Iterator[EmbeddedBatch]:
        texts = self.prepare_texts(texts)  # idempotent: the pipeline has usually done it already
        if not texts:
            return
        counts = self.count_tokens(texts)
        groups = plan_requests(
            counts, self.options.max_inputs_per_request, self.options.max_tokens_per_request
        )
        batches = [
            RequestBatch(
                number=k + 1, indices=g, texts=[texts[i] for i in g], tokens=sum(counts[i] for i in g)
            )
            for k, g in enumerate(groups)
        ]
        self._get_client()  # fail fast on a missing key, before any thread starts
        pool = ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="esrkit-openai")
        try:
            pending: dict[Future, RequestBatch] = {}
            queue = iter(batches)
            for batch in queue:
                pending[pool.submit(self._embed_request, batch)] = batch
                if len(pending) >= self.options.concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = pending.pop(future)
                    vectors, tokens = future.result()  # raises ProviderError / ProviderAuthError
                    yield EmbeddedBatch(np.asarray(batch.indices), vectors, tokens)
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(self._embed_request, nxt)] = nxt
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)

    def _embed_request(self, batch: RequestBatch) -> tuple[np.ndarray, int]:
        attempt = 0
        while True:
            try:
                return self._send(batch)
            except _Retryable as exc:
                attempt += 1
                if attempt > self.options.max_retries:
                    raise ProviderError(
                        f"{self.name}: {batch.label()}: gave up after {attempt} attempts; last error: "
                        f"{exc.reason}"
                    ) from None
                delay = self._retry_delay(attempt, exc.retry_after)
                with self._events_lock:
                    self.retry_events.append(RetryEvent(batch.number, attempt, exc.reason, delay))
                log.warning(
                    "%s: %s: %s; retry %d/%d in %.2f s",
                    self.name,
                    batch.label(),
                    exc.reason,
                    attempt,
                    self.options.max_retries,
                    delay,
                )
                self.sleep(delay)

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """The server's Retry-After when given (plus up to 10% jitter so clients do not return in lockstep),
        else exponential backoff with jitter in [50%, 100%] of the step."""
        if retry_after is not None:
            wait_s = min(retry_after, self.options.max_retry_after)
            return wait_s + self._rng.uniform(0.0, 0.1 * wait_s)
        step = min(self.options.backoff_max, self.options.backoff_base * 2 ** (attempt - 1))
        return step * self._rng.uniform(0.5, 1.0)

    def _send(self, batch: RequestBatch) -> tuple[np.ndarray, int]:
        import openai  # heavy optional import: the client loads with the first request

        client = self._get_client()
        kwargs: dict[str, Any] = {
            "input": batch.texts,
            "model": self.options.model,
            "encoding_format": self.options.encoding_format,
        }
        if self.options.dimensions:
            kwargs["dimensions"] = int(self.options.dimensions)
        with self._events_lock:
            self.requests_sent += 1
        try:
            raw = client.embeddings.with_raw_response.create(**kwargs)
            body = raw.content if hasattr(raw, "content") else raw.read()  # legacy vs. new raw responses
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ProviderAuthError(
                f"{self.name}: {batch.label()}: HTTP {exc.status_code}: the server refused the credentials "
                f"(key from ${self.options.api_key_env or '(none)'}, endpoint "
                f"{normalise_endpoint(self.base_url)}): "
                f"{self._redact(_error_message(exc))}; not retrying"
            ) from None
        except openai.APITimeoutError:
            raise _Retryable(f"timed out after {self.options.timeout:g} s") from None
        except openai.APIConnectionError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None
        except openai.APIStatusError as exc:
            message = self._redact(_error_message(exc))
            if exc.status_code in RETRY_STATUSES or exc.status_code >= 500:
                raise _Retryable(
                    f"HTTP {exc.status_code}: {message}", parse_retry_after(exc.response.headers)
                ) from None
            raise ProviderError(f"{self.name}: {batch.label()}: HTTP {exc.status_code}: {message}") from None
        return self._parse(body, batch)

    def _parse(self, body: bytes, batch: RequestBatch) -> tuple[np.ndarray, int]:
        where = f"{self.name}: {batch.label()}"
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            kind = "an HTML page" if body.lstrip()[:1] == b"<" else "malformed JSON"
            raise ProviderError(
                f"{where}: the server answered {kind} instead of embeddings ({len(body)} bytes: "
                f"{self._redact(_snippet(body))!r}); check that base_url "
                f"({normalise_endpoint(self.base_url)}) is "
                f"the API root, e.g. http://host:port/v1"
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise ProviderError(f"{where}: response has no `data` list (got {keys})")
        items = payload["data"]
        if len(items) != len(batch.texts):
            raise ProviderError(f"{where}: sent {len(batch.texts)} inputs, received {len(items)} embeddings")
        try:
            ordered = sorted(items, key=lambda item: int(item["index"]))
            if [int(item["index"]) for item in ordered] != list(range(len(items))):
                raise ProviderError(f"{where}: embedding indices are not 0..{len(items) - 1}")
            rows = [_decode_embedding(item["embedding"]) for item in ordered]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ProviderError(
                f"{where}: malformed embedding entries ({type(exc).__name__}: {exc})"
            ) from None
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise ProviderError(f"{where}: embeddings of different widths {sorted(widths)} in one response")
        vectors = self.check_vectors(np.stack(rows), len(batch.texts), batch.label())
        usage = payload.get("usage") or {}
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return vectors, int(tokens) if isinstance(tokens, int) else batch.tokens


def _decode_embedding(value: Any) -> np.ndarray:
    if isinstance(value, str):  # base64 of little-endian float32
        return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4").astype(np.float32)
    if not isinstance(value, list):
        raise TypeError(f"embedding is a {type(value).__name__}")
    return np.asarray(value, dtype=np.float32)


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[: limit * 4].decode("utf-8", errors="replace")
    return " ".join(text.split())[:limit]


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    response = getattr(exc, "response", None)
    if response is not None:
        with contextlib.suppress(AttributeError, RuntimeError, ValueError):  # a streamed or closed response
            return _snippet(response.content, 200) or f"status {response.status_code}"
    return str(exc)[:300]


def estimate_cost(tokens: int, usd_per_1m_tokens: float) -> float:
    return tokens * usd_per_1m_tokens / 1e6 if usd_per_1m_tokens else 0.0


__all__ = [
    "OpenAIOptions",
    "OpenAIProvider",
    "RetryEvent",
    "estimate_cost",
    "normalise_endpoint",
    "parse_retry_after",
    "plan_requests",
]
