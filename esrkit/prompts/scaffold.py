"""A first prompt template for a dataset nobody wrote one for, from the item attributes it actually has.

``esrkit recipe new`` calls ``scaffold_templates(data)``: it looks at every attribute field (how many items
have it, whether it is text, a number or a list), gives the recognisable ones a role by name (title,
categories, brand, year, price, description) and writes a commented TOML template in the structure of the
official ones: an attribute sentence, a features sentence, a description sentence, and a user prompt listing
the titles of each user's training items. List fields get a ``joins`` entry (words of a title: a space; genres
or tags: a comma), so nothing renders as a Python list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from esrkit.data.sequences import SequenceData

# field roles, each recognised by (lower-case) name, best-known names first
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "title": (
        "title",
        "name",
        "movie_title",
        "item_name",
        "product_title",
        "product_name",
        "book_title",
        "track_name",
        "song",
        "headline",
    ),
    "brand": (
        "brand",
        "manufacturer",
        "author",
        "artist",
        "director",
        "publisher",
        "studio",
        "creator",
        "maker",
    ),
    "year": ("year", "release_year", "date", "release_date", "published", "publication_year"),
    "price": ("price", "cost"),
    "categories": (
        "categories",
        "category",
        "genres",
        "genre",
        "class",
        "tags",
        "tag",
        "labels",
        "main_cat",
        "type",
        "style",
        "feature",
        "features",
    ),
    "description": ("description", "desc", "summary", "plot", "overview", "about", "text", "content"),
}
# fields that describe nothing a language model can use
IGNORED = {
    "item_id",
    "id",
    "asin",
    "parent_asin",
    "business_id",
    "url",
    "imurl",
    "image",
    "images",
    "imageurl",
    "imagehighres",
    "related",
    "salesrank",
    "also_buy",
    "also_view",
    "s3rec_attributes",
    "rank",
    "similar",
}
MAX_OTHER_FIELDS = 4  # further well-covered short fields named in the attribute sentence
MIN_COVERAGE = 0.5  # share of items with a value for a field without a role to be used


@dataclass
class FieldInfo:
    name: str
    items: int = 0  # items with a non-empty value
    lists: int = 0  # ... whose value is a list
    numbers: int = 0
    chars: int = 0  # total characters of the values as text

    @property
    def is_list(self) -> bool:
        return self.lists > self.items / 2

    @property
    def mean_chars(self) -> float:
        return self.chars / max(self.items, 1)


@dataclass
class TemplatePlan:
    """Which field plays which role; ``fields`` holds every field seen, for the comment at the top."""

    roles: dict[str, str] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)
    fields: dict[str, FieldInfo] = field(default_factory=dict)
    n_items: int = 0

    @property
    def title(self) -> str | None:
        return self.roles.get("title")


def survey_fields(data: SequenceData) -> dict[str, FieldInfo]:
    """Every attribute field of the items, with how often and in which shape it has a value."""
    out: dict[str, FieldInfo] = {}
    for attrs in data.item_attrs or []:
        for name, value in (attrs or {}).items():
            info = out.setdefault(name, FieldInfo(name))
            if value is None or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0):
                continue
            if isinstance(value, str) and not value.strip():
                continue
            info.items += 1
            info.lists += isinstance(value, (list, tuple))
            info.numbers += isinstance(value, (int, float)) and not isinstance(value, bool)
            info.chars += len(value if isinstance(value, str) else json.dumps(value, default=str))
    return out


def plan_template(data: SequenceData) -> TemplatePlan:
    fields = survey_fields(data)
    usable = {
        n: f for n, f in fields.items() if f.items and n.lower() not in IGNORED and not _numeric_list(data, n)
    }
    plan = TemplatePlan(fields=fields, n_items=data.n_items)
    taken: set[str] = set()
    for role, names in ROLE_NAMES.items():
        candidates = [n for n in usable if n.lower() in names and n not in taken]
        if candidates:  # the best-known name wins, then the better-covered field
            best = min(candidates, key=lambda n: (names.index(n.lower()), -usable[n].items))
            plan.roles[role] = best
            taken.add(best)
    if "title" not in plan.roles:  # no title-like name: the best-covered short text field
        texts = [n for n, f in usable.items() if n not in taken and not f.numbers and f.mean_chars <= 200]
        if texts:
            plan.roles["title"] = max(texts, key=lambda n: usable[n].items)
            taken.add(plan.roles["title"])
    rest = [
        n
        for n, f in usable.items()
        if n not in taken and f.items >= MIN_COVERAGE * max(data.n_items, 1) and f.mean_chars <= 100
    ]
    plan.others = sorted(rest, key=lambda n: -usable[n].items)[:MAX_OTHER_FIELDS]
    return plan


def _numeric_list(data: SequenceData, name: str) -> bool:
    """A list of numbers (a RecBole float_seq, say): a vector, not text."""
    for attrs in data.item_attrs or []:
        value = (attrs or {}).get(name)
        if isinstance(value, (list, tuple)) and value:
            return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return False


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _section(template: str, *options: str) -> list[str]:
    return ["", "[[item.section]]", f"template = {_toml_string(template)}", *options]


def scaffold_templates(data: SequenceData, name: str) -> str:
    """The TOML text of a commented prompt template for ``data`` (raises ValueError when items have no
    text)."""
    plan = plan_template(data)
    if plan.title is None:
        raise ValueError(
            f"dataset {data.name!r} has no item text to build prompts from (no item "
            "attributes); attach an item table when preparing it (esrkit data prepare ... "
            "--items items.csv)"
        )
    r = plan.roles
    attribute_parts = [f"name is {{{r['title']}}}"]
    attribute_parts += [
        f"{label} is {{{r[role]}}}"
        for role, label in (("brand", "brand"), ("year", "year"), ("price", "price"))
        if role in r
    ]
    attribute_parts += [f"{other.replace('_', ' ')} is {{{other}}}" for other in plan.others]
    joins = {
        n: (" " if n == r["title"] else ", ")
        for n, f in plan.fields.items()
        if f.is_list and (n in r.values() or n in plan.others)
    }
    lines = [
        f"# Prompt templates for the dataset {data.name!r}, written by `esrkit recipe new {name}` from its",
        "# item attributes. Item prompts are embedded once per item; user prompts (for finding similar",
        "# users) list the titles of each user's training items. Edit the wording freely: {field} slots are",
        "# filled from each item's attributes; a missing value reads as `missing`. Reference: docs/DATA.md",
        '# ("Your own dataset").',
        f"# Fields found (items with a value, of {plan.n_items:,}):",
    ]
    for f in sorted(plan.fields.values(), key=lambda f: -f.items):
        shape = "list" if f.is_list else ("number" if f.numbers > f.items / 2 else "text")
        used = "used" if f.name in r.values() or f.name in plan.others else "not used"
        lines.append(f"#   {f.name}: {f.items:,} ({shape}, {used})")
    lines += [
        "",
        "[item]",
        'missing = "unknown"            # what a missing value reads as',
        "cut_when_longer_than = 4096    # longer prompts are cut to cut_to characters (models have limits)",
        "cut_to = 4095",
    ]
    if joins:
        inline = ", ".join(f"{k} = {_toml_string(v)}" for k, v in joins.items())
        lines.append(f"joins = {{ {inline} }}   # how list values are joined (a title's words: a space)")
    lines += _section("The item has the following attributes: \n " + "; ".join(attribute_parts) + ". \n")
    if "categories" in r:
        lines += _section(
            f"The item has the following features: {{{r['categories']}}}. \n",
            "optional = true                # left out for an item without a value",
        )
    if "description" in r:
        lines += _section(
            f"The item has the following descriptions: {{{r['description']}}}. \n",
            "optional = true",
            "max_chars = 2048               # a long description is capped",
        )
    user_template = (
        "The user has interacted with the following items: \n{history} \nplease summarise the "
        "user's preference."
    )
    lines += [
        "",
        "[user]",
        f"template = {_toml_string(user_template)}",
        f"item_field = {_toml_string(r['title'])}   # the field listed for each training item",
        'item_suffix = ", "             # written after each listed item',
        'item_join = " "                # the words of a list-valued title',
        "history_keep_last_chars = 8000 # the most recent part of a long history is kept",
        "cut_when_longer_than = 4096",
        "cut_to = 4095",
        "",
    ]
    return "\n".join(lines)


def describe_plan(data: SequenceData) -> dict[str, Any]:
    """The roles chosen, for messages and tests."""
    plan = plan_template(data)
    return {"roles": dict(plan.roles), "others": list(plan.others)}
