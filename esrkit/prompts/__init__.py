"""Item and user prompt templates (paper Appendix A.1, with the official notebooks' exact wording and
caps)."""

from esrkit.prompts.templates import (
    ItemTemplate,
    PromptTemplates,
    Section,
    UserTemplate,
    build_item_prompts,
    build_user_prompts,
    load_templates,
    render_item,
)

__all__ = [
    "ItemTemplate",
    "PromptTemplates",
    "Section",
    "UserTemplate",
    "build_item_prompts",
    "build_user_prompts",
    "load_templates",
    "render_item",
]
