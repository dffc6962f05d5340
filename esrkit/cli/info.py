"""``esrkit providers`` and ``esrkit recipes``: what definitions exist (nothing is loaded or downloaded)."""

from __future__ import annotations

import dataclasses

import click

from esrkit.resources import find_resource, list_resources, load_toml


def _describe_definition(definition) -> tuple[str, str]:
    """(model, dims) as a definition declares them; "-" where a model must be given first."""
    from esrkit.providers.base import build_provider  # lazy: the CLI starts fast (esrkit/cli/__init__.py)

    try:
        provider = build_provider(definition.kind, definition.options, definition.name, definition.source)
    except Exception as exc:  # an invalid definition: say so instead of failing the whole listing
        return f"(invalid: {exc})", "?"
    has_model = any(f.name == "model" for f in dataclasses.fields(provider.options))
    model = str(provider.options.model) if has_model else provider.identity_model()
    if has_model and not model:
        return "(set provider.model)", "-"
    try:
        dim = provider.declared_dim()
    except Exception:  # the model's package is not installed
        return model, "?"
    return model, str(dim) if dim else "model"


@click.command("providers")
@click.option("--paths", is_flag=True, help="Show the definition file of each provider.")
def providers(paths: bool) -> None:
    """List provider definitions (providers/*.toml): name, kind, model, dimensions."""
    from esrkit.providers.base import list_definitions  # lazy: the CLI starts fast

    rows = []
    for d in list_definitions():
        model, dims = _describe_definition(d)
        rows.append((d.name, d.kind, model, dims, d.source if paths else d.description))
    headers = ("name", "kind", "model", "dims", "file" if paths else "description")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:-1])]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  " + headers[-1])
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


@click.command("recipes")
def recipes() -> None:
    """List recipe names (recipes/*.toml)."""
    for name in list_resources("recipe"):
        try:
            description = str(load_toml(find_resource("recipe", name)).get("description", ""))
        except (ValueError, OSError):
            description = "(unreadable)"
        click.echo(f"{name:<28} {description}".rstrip())
