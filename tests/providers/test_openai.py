"""The OpenAI provider against a real HTTP server on 127.0.0.1 (see conftest.FakeEmbeddingServer)."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import numpy as np
import pytest

from esrkit.providers.base import ProviderAuthError, ProviderError, build_provider
from esrkit.providers.openai import (
    Utf8ByteCounter,
    normalise_endpoint,
    parse_retry_after,
    plan_requests,
)

pytest.importorskip("openai")

KEY_ENV = "ESRKIT_TEST_OPENAI_KEY"
KEY = "sk-test-key"


@pytest.fixture
def make_provider(embedding_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def make(**options):
        base = dict(
            base_url=embedding_server.url,
            api_key_env=KEY_ENV,
            model="fake-embed",
            dim=8,
            tokenizer="bytes",
            timeout=5.0,
            backoff_base=0.05,
            backoff_max=0.2,
            max_retries=3,
        )
        base.update(options)
        return build_provider("openai", base, name="test-openai")

    return make


TEXTS = [f"item {i} " + "word " * (i % 7) for i in range(23)]


def test_batches_respect_limits_and_come_back_in_input_order(make_provider, embedding_server):
    provider = make_provider(max_inputs_per_request=4, max_tokens_per_request=60, concurrency=3)
    vectors = provider.embed(TEXTS)
    # the server answers in reverse order: the provider must reorder by index
    np.testing.assert_array_equal(vectors, embedding_server.expected(TEXTS))
    assert len(embedding_server.requests) > 1
    counter = Utf8ByteCounter()
    sent = []
    for req in embedding_server.requests:
        inputs = req.body["input"]
        assert len(inputs) <= 4
        assert len(inputs) == 1 or sum(counter.count(t) for t in inputs) <= 60
        assert req.body["encoding_format"] == "float" and req.body["model"] == "fake-embed"
        sent += inputs
    assert sorted(sent) == sorted(TEXTS)  # every text sent exactly once


def test_base64_responses_are_decoded(make_provider, embedding_server):
    vectors = make_provider(encoding_format="base64").embed(TEXTS[:5])
    np.testing.assert_array_equal(vectors, embedding_server.expected(TEXTS[:5]))


def test_dimensions_parameter_is_sent(make_provider, embedding_server):
    make_provider(dimensions=8).embed(["a"])
    assert embedding_server.requests[0].body["dimensions"] == 8


def test_429_waits_as_long_as_retry_after_says(make_provider, embedding_server):
    embedding_server.script.append(
        ("status", 429, {"Retry-After": "1"}, b'{"error": {"message": "slow down"}}')
    )
    provider = make_provider(backoff_base=5.0)  # a backoff would be much longer: the header must win
    vectors = provider.embed(["a", "b"])
    np.testing.assert_array_equal(vectors, embedding_server.expected(["a", "b"]))
    first, second = embedding_server.requests
    assert 1.0 <= second.at - first.at < 2.5
    (event,) = provider.retry_events
    assert event.reason.startswith("HTTP 429") and 1.0 <= event.wait <= 1.1


def test_retry_after_ms_is_preferred(make_provider, embedding_server):
    headers = {"retry-after-ms": "300", "Retry-After": "30"}
    embedding_server.script.append(("status", 429, headers, b"{}"))
    provider = make_provider()
    provider.embed(["a"])
    first, second = embedding_server.requests
    assert 0.3 <= second.at - first.at < 1.5
    assert 0.3 <= provider.retry_events[0].wait <= 0.33


def test_500_then_success(make_provider, embedding_server):
    embedding_server.script.extend(
        [
            ("status", 500, {}, b"<html>Internal error</html>"),
            ("status", 503, {}, b'{"error": {"message": "overloaded"}}'),
        ]
    )
    provider = make_provider()
    np.testing.assert_array_equal(provider.embed(["x", "y"]), embedding_server.expected(["x", "y"]))
    assert [e.reason.split(":")[0] for e in provider.retry_events] == ["HTTP 500", "HTTP 503"]
    assert len(embedding_server.requests) == 3


def test_timeout_then_success(make_provider, embedding_server):
    embedding_server.script.append(("sleep", 1.5))
    provider = make_provider(timeout=0.4)
    np.testing.assert_array_equal(provider.embed(["slow"]), embedding_server.expected(["slow"]))
    assert provider.retry_events[0].reason.startswith("timed out")


def test_gives_up_after_max_retries(make_provider, embedding_server):
    embedding_server.script.extend([("status", 502, {}, b"bad gateway")] * 3)
    with pytest.raises(ProviderError, match=r"batch 1 .*gave up after 3 attempts.*HTTP 502"):
        make_provider(max_retries=2).embed(["a"])


@pytest.mark.parametrize(
    "content_type, body, message",
    [
        ("application/json", b'{"data": [1, 2', "malformed JSON"),
        ("text/html", b"<!DOCTYPE html><html><body>Welcome to the web UI</body></html>", "an HTML page"),
        ("application/json", b'{"object": "list"}', "no `data` list"),
        ("application/json", b'{"data": [{"index": 0}]}', "malformed embedding entries"),
    ],
)
def test_malformed_bodies_raise_a_clear_error_naming_the_batch(
    make_provider, embedding_server, content_type, body, message
):
    embedding_server.script.append(("raw", content_type, body))
    with pytest.raises(ProviderError, match=rf"batch 1 \(inputs 0\.\.0, 1 texts\).*{message}"):
        make_provider().embed(["a"])
    assert len(embedding_server.requests) == 1  # a broken body is not retried


def test_wrong_dimensions_raise(make_provider, embedding_server):
    embedding_server.script.append(("dim", 7))
    with pytest.raises(ProviderError, match="7 dimensions, expected 8"):
        make_provider().embed(["a"])


def test_wrong_count_raises(make_provider, embedding_server):
    embedding_server.script.append(
        ("raw", "application/json", json.dumps({"data": [{"index": 0, "embedding": [0.0] * 8}]}).encode())
    )
    with pytest.raises(ProviderError, match="sent 2 inputs, received 1"):
        make_provider().embed(["a", "b"])


def test_401_stops_at_once(make_provider, embedding_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    provider = make_provider(max_inputs_per_request=1, concurrency=2)
    with pytest.raises(ProviderAuthError, match="HTTP 401.*refused the credentials.*not retrying"):
        provider.embed(["a", "b", "c", "d"])
    time.sleep(0.2)
    assert len(embedding_server.requests) <= 2  # at most the requests already in flight, never retried
    assert provider.retry_events == []


def test_403_stops_at_once(make_provider, embedding_server):
    embedding_server.script.append(("status", 403, {}, b'{"error": {"message": "not allowed"}}'))
    with pytest.raises(ProviderAuthError, match="HTTP 403"):
        make_provider().embed(["a"])
    assert len(embedding_server.requests) == 1


def test_missing_key_fails_before_any_request(make_provider, embedding_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ProviderAuthError, match=KEY_ENV):
        make_provider().embed(["a"])
    assert embedding_server.requests == []


def test_key_is_redacted_from_server_error_messages(make_provider, embedding_server):
    embedding_server.script.append(
        ("status", 400, {}, json.dumps({"error": {"message": f"bad key {KEY}"}}).encode())
    )
    with pytest.raises(ProviderError) as info:
        make_provider().embed(["a"])
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_key_never_reaches_cache_metadata_or_logs(
    make_provider, embedding_server, tiny_sequences, tmp_path, caplog
):
    from esrkit.embedding.pipeline import embed_dataset, load_embedding_dir
    from esrkit.prompts.templates import load_templates

    caplog.set_level(logging.DEBUG)
    embedding_server.script.append(("status", 429, {"retry-after-ms": "10"}, b"{}"))  # make it log a retry
    provider = make_provider(max_inputs_per_request=3)
    result = embed_dataset(
        tiny_sequences, provider, load_templates("generic"), workdir=tmp_path, progress=False
    )
    assert result.items.shape == (8, 8) and result.users.shape == (5, 8)
    assert all(r.authorization == f"Bearer {KEY}" for r in embedding_server.requests)  # the key was used
    assert "retry" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in json.dumps(result.meta) and KEY not in json.dumps(
        load_embedding_dir(result.directory).meta
    )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_dry_run_counts_uncached_tokens_without_calling_the_api(
    make_provider, embedding_server, tiny_sequences, tmp_path
):
    from esrkit.embedding.pipeline import embed_dataset, plan_dataset
    from esrkit.prompts.templates import load_templates

    templates = load_templates("generic")
    provider = make_provider(usd_per_1m_tokens=0.10)
    plan = plan_dataset(tiny_sequences, provider, templates, workdir=tmp_path)
    assert embedding_server.requests == []
    assert plan.parts["items"].to_embed == 8 and plan.parts["users"].to_embed == 5
    assert plan.tokens > 0 and plan.cost_usd == pytest.approx(plan.tokens * 0.10 / 1e6)
    embed_dataset(tiny_sequences, provider, templates, what="items", workdir=tmp_path, progress=False)
    plan = plan_dataset(tiny_sequences, provider, templates, workdir=tmp_path)
    assert plan.parts["items"].to_embed == 0 and plan.parts["items"].tokens == 0
    assert plan.parts["users"].to_embed == 5


def test_truncation_keeps_inputs_within_the_limit(make_provider, embedding_server):
    provider = make_provider(max_input_tokens=10)
    long_text = "é" * 40  # 80 UTF-8 bytes
    (prepared,) = provider.prepare_texts([long_text])
    assert len(prepared.encode()) <= 10 and long_text.startswith(prepared)
    assert provider.prepare_texts([""]) == [" "]  # the API rejects empty inputs


def test_identity_has_no_secrets_and_ignores_transport_options(make_provider, monkeypatch):
    a = make_provider(concurrency=1, timeout=3.0, max_inputs_per_request=5)
    b = make_provider(concurrency=8, timeout=30.0)
    assert a.identity.hash() == b.identity.hash()
    assert KEY not in json.dumps(a.describe())
    assert make_provider(dimensions=4).identity.hash() != a.identity.hash()


def test_helpers():
    assert plan_requests([5, 5, 5, 20, 1], max_inputs=2, max_tokens=12) == [[0, 1], [2], [3], [4]]
    assert normalise_endpoint("https://user:pw@API.openai.com/v1?x=1") == "openai"
    assert normalise_endpoint("https://myres.openai.azure.com/") == "openai"
    assert normalise_endpoint("http://user:pw@localhost:8000/v1/?token=s") == "http://localhost:8000/v1"
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after({"retry-after": when}) <= 30
    assert parse_retry_after({}) is None


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="encoding_format"):
        build_provider("openai", {"encoding_format": "int8"})
    with pytest.raises(ValueError, match="api_key"):
        build_provider("openai", {"api_key": "sk-do-not-put-keys-in-files"})
