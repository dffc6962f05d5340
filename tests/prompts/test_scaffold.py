"""A first prompt template from a dataset's own item fields (what `esrkit recipe new` writes)."""

from __future__ import annotations

import sys

import pytest

from esrkit.data.prepare import prepare_source
from esrkit.data.sequences import SequenceData
from esrkit.prompts.scaffold import describe_plan, scaffold_templates
from esrkit.prompts.templates import build_item_prompts, build_user_prompts, templates_from_dict
from tests.data.own_data import catalogue, write_csv, write_jsonl_items, write_recbole

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _first_item_prompt(data) -> str:
    return build_item_prompts(data, templates_from_dict(tomllib.loads(scaffold_templates(data, "mine"))))[0]


def _expected(item: dict) -> str:
    return (
        f"The item has the following attributes: \n name is {' '.join(item['title'])}; year is "
        f"{item['year']}. \nThe item has the following features: {', '.join(item['genres'])}. \n"
    )


def test_recbole_fields_get_roles_and_list_joins(tmp_path) -> None:
    inter, item = write_recbole(tmp_path)
    data = prepare_source("recbole", {"input": str(inter), "meta": str(item)}, name="mine")
    roles = {"title": "movie_title", "year": "release_year", "categories": "class"}
    assert describe_plan(data)["roles"] == roles
    text = scaffold_templates(data, "mine")
    assert 'joins = { movie_title = " ", class = ", " }' in text
    assert f"#   movie_title: {data.n_items} (list, used)" in text
    first = {it["item_id"]: it for it in catalogue()}[data.item_ids[0]]
    assert _first_item_prompt(data) == _expected(first)
    users = build_user_prompts(data, templates_from_dict(tomllib.loads(text)))
    assert users[0].startswith("The user has interacted with the following items: \n")
    assert not any("['" in u for u in users)


@pytest.mark.parametrize("items", ["csv", "jsonl"])
def test_item_tables_give_the_same_prompt(tmp_path, items) -> None:
    inter, items_csv = write_csv(tmp_path)
    table = items_csv if items == "csv" else write_jsonl_items(tmp_path)
    data = prepare_source("csv", {"input": str(inter), "items": str(table)}, name="mine")
    assert describe_plan(data)["roles"] == {"title": "title", "year": "year", "categories": "genres"}
    first = {it["item_id"]: it for it in catalogue()}[data.item_ids[0]]
    assert _first_item_prompt(data) == _expected(first)


def test_unknown_fields_are_used_when_well_covered_and_ids_never() -> None:
    attrs = [
        {"asin": f"B{i}", "headline": f"Thing {i}", "colour": "red", "weight": 3, "embedding": [0.1, 0.2]}
        for i in range(5)
    ]
    data = SequenceData.from_sequences([[1, 2, 3], [3, 4, 5]], n_items=5, item_attrs=attrs, name="x")
    plan = describe_plan(data)
    assert plan["roles"] == {"title": "headline"} and plan["others"] == ["colour", "weight"]
    expected = "The item has the following attributes: \n name is Thing 0; colour is red; weight is 3. \n"
    assert _first_item_prompt(data) == expected


def test_a_dataset_without_item_text_is_refused() -> None:
    data = SequenceData.from_sequences([[1, 2, 3]], n_items=3, name="ids")
    with pytest.raises(ValueError, match="no item text.*--items"):
        scaffold_templates(data, "ids")
