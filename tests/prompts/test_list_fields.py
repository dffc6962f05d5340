"""List-valued attributes render as text in item and user prompts, never as Python list literals.

RecBole ``token_seq`` columns arrive as lists of words (``movie_title:token_seq`` "English Patient, The" ->
["English", "Patient,", "The"]); JSON item files carry lists (genres, categories).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from esrkit.data.prepare import prepare_source
from esrkit.prompts import build_item_prompts, build_user_prompts, load_templates
from esrkit.prompts.templates import field_text, templates_from_dict

INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
1\t10\t5\t1
1\t20\t4\t2
1\t30\t3\t3
1\t20\t4\t4
2\t30\t5\t1
2\t10\t4\t2
2\t20\t3\t3
"""
ITEM = """item_id:token\t{title}:token_seq\trelease_year:token\tclass:token_seq
10\tEnglish Patient, The\t1996\tDrama Romance War
20\tToy Story\t1995\tAnimation Comedy
30\tHeat\t1995\tAction Crime Thriller
"""


def _recbole(tmp_path: Path, title: str = "movie_title"):
    inter, item = tmp_path / "ml.inter", tmp_path / "ml.item"
    inter.write_text(INTER)
    item.write_text(ITEM.format(title=title))
    return prepare_source(
        "recbole", {"input": str(inter), "meta": str(item)}, overrides=["user_min=0", "item_min=0"], name="ml"
    )


def test_recbole_token_seq_arrives_as_lists(tmp_path) -> None:
    data = _recbole(tmp_path)
    first = data.item_attrs[0]  # item 1 = "10" (first in user 1's sequence)
    assert first["movie_title"] == ["English", "Patient,", "The"]
    assert first["class"] == ["Drama", "Romance", "War"]


def test_generic_template_joins_a_token_seq_title_with_spaces(tmp_path) -> None:
    data = _recbole(tmp_path, title="title")
    templates = load_templates("generic")
    items = build_item_prompts(data, templates)
    assert items[0] == (
        "The item has the following attributes: \n name is English Patient, The; brand is "
        "unknown; price is unknown. \nThe item has the following descriptions: unknown. \n"
    )
    users = build_user_prompts(data, templates)
    # user 1: train = seq[:-2] = items 10, 20
    assert users[0] == (
        "The user has interacted with the following items: \nEnglish Patient, The, "
        "Toy Story,  \nplease summarise the user's preference."
    )


def test_own_template_with_joins_and_defaults(tmp_path) -> None:
    data = _recbole(tmp_path)
    templates = templates_from_dict(
        {
            "item": {
                "joins": {"movie_title": " "},
                "section": [{"template": "Movie: {movie_title} ({release_year}). Genres: {class}."}],
            },
            "user": {"template": "Watched: {history}", "item_field": "movie_title", "item_suffix": "; "},
        }
    )
    items = build_item_prompts(data, templates)
    assert items == [
        "Movie: English Patient, The (1996). Genres: Drama, Romance, War.",
        "Movie: Toy Story (1995). Genres: Animation, Comedy.",
        "Movie: Heat (1995). Genres: Action, Crime, Thriller.",
    ]
    assert build_user_prompts(data, templates) == [
        "Watched: English Patient, The; Toy Story; ",
        "Watched: Heat; ",
    ]  # user 2 trains on its first item only


def test_user_item_join_is_an_option(tmp_path) -> None:
    data = _recbole(tmp_path)
    user = {"template": "{history}", "item_field": "class", "item_join": "/", "item_suffix": " | "}
    templates = templates_from_dict({"item": {"section": [{"template": "{movie_title}"}]}, "user": user})
    assert build_user_prompts(data, templates)[0] == "Drama/Romance/War | Animation/Comedy | "


def test_no_prompt_is_a_python_literal(tmp_path) -> None:
    data = _recbole(tmp_path)
    for name in ("generic", "beauty", "yelp", "fashion"):
        templates = load_templates(name)
        prompts = build_item_prompts(data, templates) + build_user_prompts(data, templates)
        assert not any("['" in p or "']" in p for p in prompts), name


def test_field_text_flattens_nested_lists() -> None:
    assert field_text(["a", ["b", "c"], None, ""], ", ") == "a, b, c"
    assert field_text(3.5) == "3.5"


def test_joins_must_be_strings() -> None:
    with pytest.raises(TypeError, match="joins must be a table"):
        templates_from_dict({"item": {"joins": {"title": 1}, "section": [{"template": "{title}"}]}})
