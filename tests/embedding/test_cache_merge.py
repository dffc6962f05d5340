"""Merging caches filled on another machine: only missing rows move, identities never mix, nothing is
overwritten."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from esrkit.embedding.cache import CacheError, EmbeddingCache, list_caches, merge_caches
from esrkit.providers.base import ProviderIdentity


def ident(seed: int, dim: int = 4) -> ProviderIdentity:
    return ProviderIdentity(kind="random", model="random-normal-v1", params={"seed": seed}, dim=dim)


def fill(workdir, identity, keys, offset=0.0):
    vecs = np.arange(len(keys) * identity.dim, dtype=np.float32).reshape(len(keys), identity.dim) + offset
    with EmbeddingCache(workdir, identity) as cache:
        cache.put(keys, vecs)
    return dict(zip(keys, vecs))


def read(workdir, identity, keys):
    with EmbeddingCache(workdir, identity, readonly=True) as cache:
        return cache.get(keys)


def test_merge_adds_only_missing_rows_and_keeps_existing_ones(tmp_path):
    gpu, here = tmp_path / "gpu", tmp_path / "here"
    source = fill(gpu, ident(0), ["a", "b", "c", "d", "e"])
    mine = fill(here, ident(0), ["a", "b"], offset=100.0)  # same keys, different values: must survive
    other = fill(gpu, ident(1, dim=3), ["x", "y"])  # an identity the destination lacks is copied whole

    summaries = {s.identity_hash: s for s in merge_caches(gpu, here, batch=2)}  # several batches
    assert summaries[ident(0).hash()].added == 3 and summaries[ident(0).hash()].vectors == 5
    assert summaries[ident(1, 3).hash()].added == 2 and summaries[ident(1, 3).hash()].dim == 3
    np.testing.assert_array_equal(read(here, ident(0), ["a", "b"]), np.stack([mine["a"], mine["b"]]))
    np.testing.assert_array_equal(read(here, ident(0), ["c", "e"]), np.stack([source["c"], source["e"]]))
    np.testing.assert_array_equal(read(here, ident(1, 3), ["y"]), other["y"][None])

    again = merge_caches(gpu / "cache", here)  # a cache/ folder works too; a rerun moves nothing
    assert [s.added for s in again] == [0, 0]
    assert sorted(s.vectors for s in list_caches(here)) == [2, 5]


def test_merge_refuses_a_tampered_identity_and_the_same_cache(tmp_path):
    fill(tmp_path / "src", ident(0), ["a"])
    with pytest.raises(CacheError, match="same cache"):
        merge_caches(tmp_path / "src", tmp_path / "src")
    folder = next((tmp_path / "src" / "cache").iterdir())
    conn = sqlite3.connect(folder / "vectors.sqlite")
    forged = json.dumps(ident(7).to_dict(), sort_keys=True)  # claims another identity under the old hash
    conn.execute("UPDATE meta SET value = ? WHERE key = 'identity'", (forged,))
    conn.commit()
    conn.close()
    with pytest.raises(CacheError, match="does not match its identity hash"):
        merge_caches(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst" / "cache").exists() or not any((tmp_path / "dst" / "cache").iterdir())
    with pytest.raises(CacheError, match="no embedding cache here"):
        merge_caches(tmp_path / "dst", tmp_path / "other")


def test_cli_merge_and_list(tmp_path):
    fill(tmp_path / "gpu", ident(0), ["a", "b", "c"])
    fill(tmp_path / "here", ident(0), ["a"])
    runner = CliRunner()
    merged = runner.invoke(
        cli, ["cache", "merge", str(tmp_path / "gpu"), "--workdir", str(tmp_path / "here")]
    )
    assert merged.exit_code == 0, merged.output
    assert (
        ident(0).hash()[:16] in merged.output and "3 vectors" in merged.output and "(+2 from" in merged.output
    )
    listed = runner.invoke(cli, ["cache", "list", "--workdir", str(tmp_path / "here")])
    assert listed.exit_code == 0 and "random-normal-v1" in listed.output and "4-d" in listed.output
    missing = runner.invoke(cli, ["cache", "list", "--workdir", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "no embedding cache here" in missing.output
