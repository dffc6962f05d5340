"""embed_dataset: alignment, caching across template and provider changes, metadata, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from esrkit.data.sequences import SequenceData
from esrkit.embedding.pipeline import embed_dataset, embedding_directory, load_embedding_dir, plan_dataset
from esrkit.prompts.templates import (
    build_item_prompts,
    build_user_prompts,
    load_templates,
    templates_from_dict,
)
from esrkit.providers import load_provider


def templates(with_brand: bool = False):
    sections = [{"template": "name is {title}. "}]
    if with_brand:
        sections.append({"template": "brand is {brand}. ", "optional": True})
    return templates_from_dict(
        {"item": {"section": sections}, "user": {}}, name="brand" if with_brand else "plain"
    )


def test_rows_are_aligned_to_item_ids_and_user_rows(tiny_sequences, tmp_path):
    provider = load_provider("offline")
    tpl = load_templates("generic")
    result = embed_dataset(tiny_sequences, provider, tpl, workdir=tmp_path, progress=False)
    items, users = build_item_prompts(tiny_sequences, tpl), build_user_prompts(tiny_sequences, tpl)
    assert result.items.shape == (8, 384) and result.users.shape == (5, 384)
    for item_id in range(1, 9):  # row i-1 = item i
        np.testing.assert_allclose(
            result.items[item_id - 1], provider.embed([items[item_id - 1]])[0], atol=1e-6
        )
    np.testing.assert_allclose(result.users, provider.embed(users), atol=1e-6)
    assert result.directory == embedding_directory(tiny_sequences, provider, tpl, tmp_path)
    assert result.directory.name.startswith(tiny_sequences.fingerprint()[:12])
    assert result.directory.name.endswith(provider.identity.hash()[:12])
    loaded = load_embedding_dir(result.directory)
    np.testing.assert_array_equal(loaded.items, result.items)
    np.testing.assert_array_equal(loaded.users, result.users)


def test_metadata(tiny_sequences, tmp_path):
    provider = load_provider("offline")
    tpl = load_templates("generic")
    meta = embed_dataset(tiny_sequences, provider, tpl, workdir=tmp_path, progress=False).meta
    assert meta["provider"]["identity"] == provider.identity.to_dict()
    assert meta["dim"] == 384 and meta["templates"]["name"] == "generic"
    assert (
        meta["templates"]["item_hash"] == tpl.item_hash()
        and meta["templates"]["user_hash"] == tpl.user_hash()
    )
    items = meta["parts"]["items"]
    assert items["computed"] == items["n_unique"] and items["cached"] == 0
    assert items["texts_per_s"] > 0 and items["tokens_per_s"] > 0 and items["seconds"] >= 0
    assert items["load_seconds"] >= 0
    on_disk = json.loads((tmp_path / "embeddings" / meta_dir(tmp_path) / "embedding.json").read_text())
    assert on_disk["parts"] == meta["parts"]


def meta_dir(root):
    (only,) = [p.name for p in (root / "embeddings").iterdir() if p.is_dir()]
    return only


def test_rerun_is_fully_cached(tiny_sequences, tmp_path):
    provider = load_provider("offline")
    tpl = load_templates("generic")
    first = embed_dataset(tiny_sequences, provider, tpl, workdir=tmp_path, progress=False)
    second = embed_dataset(tiny_sequences, load_provider("offline"), tpl, workdir=tmp_path, progress=False)
    for part in ("items", "users"):
        assert second.meta["parts"][part]["computed"] == 0
        assert second.meta["parts"][part]["cached"] == first.meta["parts"][part]["n_unique"]
        # the cached rerun keeps what computing the vectors cost the first time
        assert second.meta["parts"][part]["cold"] == first.meta["parts"][part]["cold"]
        assert first.meta["parts"][part]["cold"]["computed"] == first.meta["parts"][part]["n_unique"]
    np.testing.assert_array_equal(first.items, second.items)


def test_template_change_reembeds_only_changed_prompts(tiny_sequences, tmp_path):
    provider = load_provider("offline")
    embed_dataset(tiny_sequences, provider, templates(False), workdir=tmp_path, progress=False)
    # the optional brand section only appears for items that have a brand (odd ids in the fixture)
    changed = embed_dataset(tiny_sequences, provider, templates(True), workdir=tmp_path, progress=False)
    items = changed.meta["parts"]["items"]
    assert (items["computed"], items["cached"]) == (4, 4)
    # a new template is a new directory: its cold cost counts the 4 prompts it had to compute, not the reused
    # 4
    assert items["cold"]["computed"] == 4
    assert changed.meta["parts"]["users"]["computed"] == 0


def test_provider_swap_never_mixes(tiny_sequences, tmp_path):
    tpl = load_templates("generic")
    a = embed_dataset(
        tiny_sequences, load_provider("random", seed=1, dim=16), tpl, workdir=tmp_path, progress=False
    )
    b = embed_dataset(
        tiny_sequences, load_provider("random", seed=2, dim=16), tpl, workdir=tmp_path, progress=False
    )
    assert b.meta["parts"]["items"]["cached"] == 0 and b.meta["parts"]["users"]["cached"] == 0
    assert a.directory != b.directory
    assert not np.allclose(a.items, b.items)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    again = embed_dataset(
        tiny_sequences, load_provider("random", seed=1, dim=16), tpl, workdir=tmp_path, progress=False
    )
    np.testing.assert_array_equal(again.items, a.items)


def test_duplicate_prompts_embedded_once(tmp_path):
    attrs = [{"title": "Same thing"}, {"title": "Same thing"}, {"title": "Other"}]
    data = SequenceData.from_sequences([[1, 2, 3], [3, 2, 1]], n_items=3, item_attrs=attrs, name="dups")
    result = embed_dataset(
        data, load_provider("offline"), templates(), what="items", workdir=tmp_path, progress=False
    )
    assert result.meta["parts"]["items"]["n_unique"] == 2 and result.meta["parts"]["items"]["computed"] == 2
    np.testing.assert_array_equal(result.items[0], result.items[1])
    assert result.users is None and "users" not in result.meta["parts"]


def test_parts_accumulate_in_one_directory(tiny_sequences, tmp_path):
    provider, tpl = load_provider("offline"), load_templates("generic")
    only_items = embed_dataset(tiny_sequences, provider, tpl, what="items", workdir=tmp_path, progress=False)
    only_users = embed_dataset(tiny_sequences, provider, tpl, what="users", workdir=tmp_path, progress=False)
    assert only_items.directory == only_users.directory
    loaded = load_embedding_dir(only_users.directory)
    assert loaded.items is not None and loaded.users is not None
    with pytest.raises(ValueError, match="what must be"):
        embed_dataset(tiny_sequences, provider, tpl, what="everything", workdir=tmp_path)


def test_same_interactions_different_metadata_get_different_directories(tiny_sequences, tmp_path):
    other_attrs = [dict(a, title=a["title"] + " v2") for a in tiny_sequences.item_attrs]
    other = SequenceData.from_sequences(tiny_sequences.sequences(), n_items=8, item_attrs=other_attrs)
    assert other.fingerprint() == tiny_sequences.fingerprint()
    provider, tpl = load_provider("offline"), load_templates("generic")
    assert embedding_directory(other, provider, tpl, tmp_path) != embedding_directory(
        tiny_sequences, provider, tpl, tmp_path
    )


def test_plan_for_the_offline_provider(tiny_sequences, tmp_path):
    plan = plan_dataset(tiny_sequences, load_provider("offline"), load_templates("generic"), workdir=tmp_path)
    assert plan.parts["items"].to_embed == 8 and plan.cost_usd == 0.0


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def dataset_dir(tiny_sequences, tmp_path):
    return tiny_sequences.save(tmp_path / "tiny-dataset")


def run_cli(*args):
    from esrkit.cli.main import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_cli_embed_and_rerun(dataset_dir, tmp_path):
    work = tmp_path / "work"
    res = run_cli("embed", "--dataset", str(dataset_dir), "--workdir", str(work), "--no-progress")
    assert res.exit_code == 0, res.output
    assert "items: 8 x 384" in res.output and "users: 5 x 384" in res.output and "-> " in res.output
    out_dir = res.output.split("-> ")[-1].strip()
    assert load_embedding_dir(out_dir).items.shape == (8, 384)
    res = run_cli(
        "embed",
        "--dataset",
        str(dataset_dir),
        "--workdir",
        str(work),
        "--no-progress",
        "--what",
        "items",
        "--set",
        "provider.dim=32",
        "--set",
        "seed=3",
    )
    assert res.exit_code == 0, res.output
    assert "items: 8 x 32" in res.output and "users" not in res.output


def test_cli_dry_run_and_errors(dataset_dir, tmp_path):
    res = run_cli(
        "embed",
        "--provider",
        "openai",
        "--dataset",
        str(dataset_dir),
        "--workdir",
        str(tmp_path / "w"),
        "--dry-run",
    )
    assert res.exit_code == 0, res.output
    assert "items: 8 texts" in res.output and "estimated cost $" in res.output
    res = run_cli("embed", "--provider", "offline", "--dataset", str(dataset_dir), "--set", "provider.nope=1")
    assert res.exit_code != 0 and "unknown key" in res.output
    res = run_cli("embed", "--dataset", str(tmp_path / "missing"))
    assert res.exit_code != 0 and "not a dataset directory" in res.output


def test_cli_listings():
    res = run_cli("providers")
    assert res.exit_code == 0
    lines = {line.split()[0]: line for line in res.output.splitlines()[1:]}
    assert "1536" in lines["openai"] and "384" in lines["offline"] and "decoder" in lines["llama"]
    res = run_cli("recipes")
    assert res.exit_code == 0
