"""``generic-short`` is the generic item prompt with its description sentence capped at 300 characters: the
other sections, the user prompt and short descriptions come out exactly as ``generic`` writes them."""

from __future__ import annotations

from esrkit.prompts import load_templates
from esrkit.prompts.templates import render_item

ATTRS = {
    "title": "Digital caliper",
    "brand": "Acme",
    "price": "19.99",
    "categories": [["Industrial & Scientific", "Test, Measure & Inspect", "Calipers"]],
}


def test_a_long_description_is_cut_to_300_characters_and_the_rest_is_generic() -> None:
    generic, short = load_templates("generic"), load_templates("generic-short")
    attrs = {**ATTRS, "description": "Stainless steel, 0-150 mm, 0.01 mm resolution. " * 40}
    full, cut = render_item(attrs, generic.item), render_item(attrs, short.item)
    head = full[: full.index("The item has the following descriptions:")]
    assert cut.startswith(head)
    description = cut[len(head) :]
    assert len(description) == 300
    assert full[len(head) :].startswith(description)
    assert len(full) > len(cut) + 1000


def test_a_short_description_and_the_user_prompt_are_unchanged() -> None:
    generic, short = load_templates("generic"), load_templates("generic-short")
    attrs = {**ATTRS, "description": "Reads to 0.01 mm."}
    assert render_item(attrs, short.item) == render_item(attrs, generic.item)
    assert short.user == generic.user
