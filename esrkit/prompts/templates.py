"""Prompt templates as plain TOML, rendered exactly like the official LLM-ESR notebooks.

An item template is a list of sections. Each section is a text with ``{field}`` slots filled from the item's
attribute dict (the raw metadata, as the official ``item2attributes.json``). The official quirks are options, so
the defaults in ``recipes/prompts/*.toml`` reproduce the authors' strings byte for byte:

* a missing (or, for Fashion, longer than 100 characters) field becomes ``missing`` ("unknown");
* a list field is joined with every element *followed* by the separator (``"a; b; "``), a list of lists takes its
  first list (Amazon 2014 ``categories``);
* an ``optional`` section disappears when its list field is missing; a section can be capped (``max_chars``);
* the whole prompt is cut to ``cut_to`` characters when longer than ``cut_when_longer_than``.

User prompts list the titles of the user's *training* items only (valid/test never leak into retrieval), keep the
last ``history_keep_last_chars`` characters, and may be cut like item prompts.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
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
    join: str = "; "
    join_trailing: bool = True
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


@dataclass(frozen=True)
class UserTemplate:
    template: str = "The user has visited following items: \n{history} \nplease conclude the user's perference."
    item_field: str = "title"
    item_suffix: str = ", "
    history_keep_last_chars: int = 8000
    cut_when_longer_than: int = 0
    cut_to: int = 0


@dataclass(frozen=True)
class PromptTemplates:
    name: str
    item: ItemTemplate
    user: UserTemplate
    source: str = ""

    def item_hash(self) -> str:
        return stable_json_hash({"item": asdict(self.item)})[:16]

    def user_hash(self) -> str:
        return stable_json_hash({"user": asdict(self.user)})[:16]


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
    user_spec = dict(spec.get("user", {}))
    _reject_unknown(user_spec, set(UserTemplate.__dataclass_fields__), f"{source or name}: [user]")
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


def _format_list(value: list | tuple, section: Section) -> str:
    if value and isinstance(value[0], (list, tuple)):
        value = value[0] if section.list_mode == "first" else [v for sub in value for v in sub]
    parts = [str(v) for v in value]
    if section.join_trailing:
        return "".join(p + section.join for p in parts)
    return section.join.join(parts)


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
                values[name] = _format_list(value, section) if value else template.missing
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
    """One prompt per item id 1..n_items (list index = id - 1). Items without attributes get an all-missing prompt."""
    template = templates.item if isinstance(templates, PromptTemplates) else templates
    attrs = data.item_attrs or [{} for _ in range(data.n_items)]
    return [render_item(a or {}, template) for a in attrs]


def build_user_prompts(data: SequenceData, templates: PromptTemplates | UserTemplate) -> list[str]:
    """One prompt per user row, from the user's training items only (``seq[:-2]``)."""
    template = templates.user if isinstance(templates, PromptTemplates) else templates
    attrs = data.item_attrs or [{} for _ in range(data.n_items)]
    titles = [a.get(template.item_field) if a else None for a in attrs]
    train_len, _ = data.split_lengths("train")
    prompts = []
    for u in range(data.n_users):
        seq = data.sequence(u)[: train_len[u]]
        history = "".join(
            str(titles[i - 1]) + template.item_suffix for i in seq.tolist() if not _is_missing(titles[i - 1])
        )
        if template.history_keep_last_chars and len(history) > template.history_keep_last_chars:
            history = history[-template.history_keep_last_chars :]
        prompt = template.template.replace("{history}", history)
        prompts.append(_cut(prompt, template.cut_when_longer_than, template.cut_to))
    return prompts


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
    "load_templates",
    "render_item",
    "template_fields",
    "templates_from_dict",
    "templates_to_dict",
]

