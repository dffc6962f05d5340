"""Prompt templates as plain TOML, rendered exactly like the official LLM-ESR notebooks.

An item template is a list of sections. Each section is a text with ``{field}`` slots filled from the item's
attribute dict (the raw metadata, as the official ``item2attributes.json``). The official quirks are options,
so the defaults in ``recipes/prompts/*.toml`` reproduce the authors' strings byte for byte:

* a missing (or, for Fashion, longer than 100 characters) field becomes ``missing`` ("unknown");
* a list field is joined with ``", "`` (``[item] list_join``), or with its section's ``join``: the official
  templates set ``join`` with ``join_trailing = true``, every element *followed* by the separator
  (``"a; b; "``); ``[item] joins = {title = " ", genre = ", "}`` gives single fields their own separator, e.g.
  a RecBole ``token_seq`` title, which arrives as a list of words; a list of lists takes its first list
  (Amazon 2014 ``categories``);
* an ``optional`` section disappears when its list field is missing; a section can be capped (``max_chars``);
* the whole prompt is cut to ``cut_to`` characters when longer than ``cut_when_longer_than``.

User prompts list the titles of the user's *training* items only (valid/test never leak into retrieval), keep
the last ``history_keep_last_chars`` characters, and may be cut like item prompts. A title that is a list (a
``token_seq`` title, say) is joined with ``item_join`` (a space by default). No list is ever rendered as a
Python list literal.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from esrkit.data.sequences import SequenceData
from esrkit.resources import find_resource, load_toml
from esrkit.utils.io import stable_json_hash

_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Section:
    template: str
    optional: bool = False  # drop the section when its list field is missing (official get_feat)
    join: str | None = None  # separator of list values (None: the template's list_join)
    join_trailing: bool | None = None  # every element followed by `join` (None: true when `join` is set)
    list_mode: str = "first"  # list of lists: "first" list (official) or "flatten"
    max_chars: int = 0  # 0 = no cap; official caps the feature/description sentences at 2048

    def fields(self) -> list[str]:
        return _SLOT.findall(self.template)


@dataclass(frozen=True)
class ItemTemplate:
    sections: tuple[Section, ...]
    missing: str = "unknown"
    field_max_chars: int = 0  # Fashion: a field longer than 100 characters becomes `missing`
    cut_when_longer_than: int = 0
    cut_to: int = 0
    joins: dict[str, str] = field(default_factory=dict, hash=False)  # field -> separator of its list values
    list_join: str = ", "  # separator of list values in sections without their own `join`


@dataclass(frozen=True)
class UserTemplate:
    template: str = (
        "The user has visited following items: \n{history} \nplease conclude the user's perference."
    )
    item_field: str = "title"
    item_suffix: str = ", "
    history_keep_last_chars: int = 8000
    cut_when_longer_than: int = 0
    cut_to: int = 0
    item_join: str = " "  # joins the words of a list-valued item_field (e.g. a RecBole token_seq title)


# options added after templates were first hashed: left out of the hash at their defaults (and a section's
# unset join hashed as the value it used to default to), so the embedding directories of existing templates
# keep their names; a change in the rendered text changes those names anyway (they include the prompts'
# hashes)
_LATER_DEFAULTS = {"joins": {}, "item_join": " ", "list_join": ", "}
_EARLIER_SECTION_DEFAULTS = {"join": "; ", "join_trailing": True}


def _hashed(template: ItemTemplate | UserTemplate) -> dict[str, Any]:
    out = {
        k: v for k, v in asdict(template).items() if not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
    }
    for section in out.get("sections", ()):
        section.update({k: v for k, v in _EARLIER_SECTION_DEFAULTS.items() if section.get(k) is None})
    return out


@dataclass(frozen=True)
class PromptTemplates:
    name: str
    item: ItemTemplate
    user: UserTemplate
    source: str = ""

    def item_hash(self) -> str:
        return stable_json_hash({"item": _hashed(self.item)})[:16]

    def user_hash(self) -> str:
        return stable_json_hash({"user": _hashed(self.user)})[:16]


# ---------------------------------------------------------------------------------------------- loading
def templates_from_dict(spec: dict[str, Any], name: str = "custom", source: str = "") -> PromptTemplates:
    item_spec = dict(spec.get("item", {}))
    sections_spec = item_spec.pop("section", None)
    if not sections_spec:
        raise ValueError(f"{source or name}: [item] needs at least one [[item.section]]")
    allowed_item = {f for f in ItemTemplate.__dataclass_fields__ if f != "sections"}
    _reject_unknown(item_spec, allowed_item, f"{source or name}: [item]")
    sections = []
    for i, s in enumerate(sections_spec):
        _reject_unknown(s, set(Section.__dataclass_fields__), f"{source or name}: [[item.section]] #{i + 1}")
        if "template" not in s:
            raise ValueError(f"{source or name}: [[item.section]] #{i + 1} needs a 'template'")
        sections.append(Section(**s))
    joins = item_spec.get("joins", {})
    if not isinstance(joins, dict) or not all(isinstance(v, str) for v in joins.values()):
        raise TypeError(
            f'{source or name}: [item] joins must be a table of field = "separator" strings, '
            f'e.g. joins = {{ title = " ", genre = ", " }}'
        )
    user_spec = dict(spec.get("user", {}))
    _reject_unknown(user_spec, set(UserTemplate.__dataclass_fields__), f"{source or name}: [user]")
    if not isinstance(user_spec.get("item_join", " "), str):
        raise TypeError(
            f"{source or name}: [user] item_join must be a string (the separator of a list title)"
        )
    return PromptTemplates(
        name=name,
        item=ItemTemplate(sections=tuple(sections), **item_spec),
        user=UserTemplate(**user_spec),
        source=source,
    )


def templates_to_dict(templates: PromptTemplates) -> dict[str, Any]:
    """The TOML-shaped spec ``templates_from_dict`` reads: an exported model renders new items' prompts from
    it without the recipe's prompt file."""
    item = asdict(templates.item)
    item["section"] = [dict(s) for s in item.pop("sections")]
    return {"item": item, "user": asdict(templates.user)}


def load_templates(name_or_path: str) -> PromptTemplates:
    path = find_resource("prompt", name_or_path)
    return templates_from_dict(load_toml(path), name=Path(path).stem, source=str(path))


def _reject_unknown(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


# ---------------------------------------------------------------------------------------------- rendering
def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _format_list(value: list | tuple, section: Section, template: ItemTemplate, name: str) -> str:
    """A list as text: the field's own separator (``[item] joins``), else the section's ``join`` (official:
    every element followed by it), else the template's ``list_join`` between elements."""
    if value and isinstance(value[0], (list, tuple)):
        value = value[0] if section.list_mode == "first" else [v for sub in value for v in sub]
    parts = [field_text(v) for v in value]
    if name in template.joins:
        return template.joins[name].join(parts)
    if section.join is None:
        trailing, sep = bool(section.join_trailing), template.list_join
    else:
        trailing, sep = section.join_trailing is not False, section.join
    return "".join(p + sep for p in parts) if trailing else sep.join(parts)


def field_text(value: Any, join: str = " ") -> str:
    """Any attribute value as text: lists (and lists of lists) joined with ``join``, never a Python
    literal."""
    if isinstance(value, (list, tuple)):
        return join.join(field_text(v, join) for v in value if not _is_missing(v))
    return str(value)


def _format_scalar(value: Any, template: ItemTemplate) -> str:
    if _is_missing(value):
        return template.missing
    text = str(value)
    if template.field_max_chars and len(text) > template.field_max_chars:
        return template.missing
    return text


def render_item(attrs: dict[str, Any], template: ItemTemplate) -> str:
    out = []
    for section in template.sections:
        values: dict[str, str] = {}
        skip = False
        for name in section.fields():
            value = attrs.get(name)
            if isinstance(value, (list, tuple)):
                if _is_missing(value) and section.optional:
                    skip = True
                    break
                values[name] = _format_list(value, section, template, name) if value else template.missing
            elif section.optional and _is_missing(value):
                skip = True
                break
            else:
                values[name] = _format_scalar(value, template)
        if skip:
            continue
        text = section.template
        for name, value in values.items():
            text = text.replace("{" + name + "}", value)
        if section.max_chars and len(text) > section.max_chars:
            text = text[: section.max_chars]
        out.append(text)
    prompt = "".join(out)
    return _cut(prompt, template.cut_when_longer_than, template.cut_to)


def _cut(text: str, longer_than: int, cut_to: int) -> str:
    if longer_than and len(text) > longer_than:
        return text[: cut_to or longer_than]
    return text


def build_item_prompts(data: SequenceData, templates: PromptTemplates | ItemTemplate) -> list[str]:
    """One prompt per item id 1..n_items (list index = id - 1). Items without attributes get an all-missing
    prompt."""
    template = templates.item if isinstance(templates, PromptTemplates) else templates
    attrs = data.item_attrs or [{} for _ in range(data.n_items)]
    return [render_item(a or {}, template) for a in attrs]


def build_user_prompts(data: SequenceData, templates: PromptTemplates | UserTemplate) -> list[str]:
    """One prompt per user row, from the user's training items only (``seq[:-2]``)."""
    template = templates.user if isinstance(templates, PromptTemplates) else templates
    attrs = data.item_attrs or [{} for _ in range(data.n_items)]
    titles = [_title_text(a.get(template.item_field), template) if a else None for a in attrs]
    train_len, _ = data.split_lengths("train")
    prompts = []
    for u in range(data.n_users):
        seq = data.sequence(u)[: train_len[u]]
        history = "".join(titles[i - 1] + template.item_suffix for i in seq.tolist() if titles[i - 1])
        if template.history_keep_last_chars and len(history) > template.history_keep_last_chars:
            history = history[-template.history_keep_last_chars :]
        prompt = template.template.replace("{history}", history)
        prompts.append(_cut(prompt, template.cut_when_longer_than, template.cut_to))
    return prompts


def _title_text(value: Any, template: UserTemplate) -> str | None:
    """An item's entry in a user's history; None when it has no title (it is left out, as official)."""
    if _is_missing(value):
        return None
    return field_text(value, template.item_join) or None


def template_fields(templates: PromptTemplates) -> list[str]:
    """Attribute names a template reads (for `esrkit data stats` coverage reports)."""
    names: list[str] = []
    for s in templates.item.sections:
        for f in s.fields():
            if f not in names:
                names.append(f)
    return names


__all__ = [
    "ItemTemplate",
    "PromptTemplates",
    "Section",
    "UserTemplate",
    "build_item_prompts",
    "build_user_prompts",
    "field_text",
    "load_templates",
    "render_item",
    "template_fields",
    "templates_from_dict",
    "templates_to_dict",
]
