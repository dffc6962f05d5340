"""The Beauty prompts render the official notebooks' wording character for character
(../shared/reference/official-code-behaviour.md, sections 1.7 and 1.8: typos, newlines, "unknown" for missing
attributes, the features' first category path, the 4095-character cut, training items only in user
prompts)."""

from __future__ import annotations

from esrkit.data.sequences import SequenceData
from esrkit.prompts import load_templates
from esrkit.prompts.templates import build_item_prompts, build_user_prompts

ITEMS = [
    {
        "title": "Lip Gloss",
        "brand": "Acme",
        "price": 9.99,
        "categories": [["Beauty", "Makeup", "Lips"], ["Other"]],
        "description": "Shiny and long lasting.",
    },
    {"title": "Night Cream", "description": "Rich."},  # no brand, price or categories
    {"title": "Serum", "brand": "B", "price": 20.0, "categories": [["Beauty"]], "description": "x" * 5000},
    {"brand": "NoTitle"},  # no title: left out of user histories
    {"title": "Soap", "brand": "C", "price": 3.5, "categories": [["Bath"]], "description": "Clean."},
]


def _data() -> SequenceData:
    # user 0 trains on items 1, 2, 4 (seq[:-2]); items 3 and 5 are its validation and test targets
    return SequenceData.from_sequences(
        [[1, 2, 4, 3, 5], [5, 1, 2]], n_items=5, item_attrs=ITEMS, name="beauty"
    )


def test_beauty_item_prompts_are_the_notebooks_strings() -> None:
    prompts = build_item_prompts(_data(), load_templates("beauty"))
    assert prompts[0] == (
        "The beauty item has following attributes: \n name is Lip Gloss; brand is Acme; price is 9.99. \n"
        "The item has following features: Beauty; Makeup; Lips; . \n"
        "The item has following descriptions: Shiny and long lasting.. \n"
    )
    assert prompts[1] == (  # missing attributes read "unknown"; without categories the features part is gone
        "The beauty item has following attributes: \n name is Night Cream; brand is unknown; price is "
        "unknown. \n"
        "The item has following descriptions: Rich.. \n"
    )
    head = (
        "The beauty item has following attributes: \n name is Serum; brand is B; price is 20.0. \n"
        "The item has following features: Beauty; . \nThe item has following descriptions: "
    )
    assert prompts[2] == (head + "x" * 5000)[:4095]  # cut to its first 4095 characters before the API call


def test_beauty_user_prompts_list_training_titles_only() -> None:
    prompts = build_user_prompts(_data(), load_templates("beauty"))
    # "fashions" and "perference" are the notebook's own words; every title is followed by ", " (then the
    # template's " \n"), an item without a title is skipped
    assert prompts[0] == (
        "The user has visited following fashions: \nLip Gloss, Night Cream,  \n"
        "please conclude the user's perference."
    )
    assert (
        prompts[1]
        == "The user has visited following fashions: \nSoap,  \nplease conclude the user's perference."
    )


def test_beauty_user_prompt_keeps_the_last_8000_history_characters_then_cuts_to_4095() -> None:
    titles = [f"{i:02d}" + "t" * 998 for i in range(1, 15)]  # 1,000 characters each
    data = SequenceData.from_sequences(
        [list(range(1, 15))], n_items=14, item_attrs=[{"title": t} for t in titles]
    )
    history = "".join(t + ", " for t in titles[:12])[-8000:]  # 12 training items, 12,024 characters
    full = f"The user has visited following fashions: \n{history} \nplease conclude the user's perference."
    (prompt,) = build_user_prompts(data, load_templates("beauty"))
    assert (
        prompt == full[:4095] and "perference" not in prompt
    )  # the closing instruction is cut off, as official
