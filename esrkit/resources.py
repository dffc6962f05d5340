"""Where named recipes, provider definitions and prompt templates are found.

A name resolves to the first match of: an existing file path; ``$ESRKIT_PATH`` folders (``:``-separated, each
with ``recipes/``, ``providers/``, ``recipes/prompts/`` inside); the current directory; the esrkit checkout
itself. Users add their own definitions by dropping a TOML file into any of these.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from esrkit.utils.errors import choices, quote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KIND_DIRS = {
    "recipe": "recipes",
    "provider": "providers",
    "prompt": "recipes/prompts",
    "study": "recipes/studies",
}
REPO_ROOT = Path(__file__).resolve().parent.parent


def search_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("ESRKIT_PATH", "").split(os.pathsep) if p]
    roots += [Path.cwd(), REPO_ROOT]
    seen: list[Path] = []
    for r in roots:
        if r.resolve() not in [s.resolve() for s in seen]:
            seen.append(r)
    return seen


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory or the repository when inside one (records that get
    published should not carry a machine's absolute paths), else as given."""
    resolved = Path(path).resolve()
    for root in (Path.cwd(), REPO_ROOT):
        if resolved.is_relative_to(root.resolve()):
            return str(resolved.relative_to(root.resolve()))
    return str(path)


def find_resource(kind: str, name: str) -> Path:
    if kind not in KIND_DIRS:
        raise ValueError(f"unknown resource kind {kind!r}")
    candidate = Path(os.path.expanduser(name))
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    for root in search_roots():
        path = root / KIND_DIRS[kind] / f"{name}.toml"
        if path.is_file():
            return path
    searched = ", ".join(map(str, search_roots()))
    known = choices(name, list_resources(kind))
    raise FileNotFoundError(f"no {kind} named {quote(name)}{known}; searched: {searched}")


def list_resources(kind: str) -> list[str]:
    names: set[str] = set()
    for root in search_roots():
        folder = root / KIND_DIRS[kind]
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.toml"))
    return sorted(names)


def load_toml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None


def expand_path(value: str, base: Path | None = None) -> Path:
    """Expand ``~`` and ``$VARS`` (``$ESRKIT_SHARED`` defaults to ``<checkout>/../shared``)."""
    env = dict(os.environ)
    env.setdefault("ESRKIT_SHARED", str(REPO_ROOT.parent / "shared"))
    expanded = value
    for key in sorted(env, key=len, reverse=True):
        expanded = expanded.replace("${" + key + "}", env[key])
    expanded = os.path.expandvars(os.path.expanduser(expanded))
    path = Path(expanded)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path
