"""``esrkit recipe new``: a commented recipe and prompt template for a processed dataset nobody wrote one for.

The recipe trains LLM-ESR with the official settings on the dataset (or, with ``preset="best"``, esrkit's
recommended full-ranking configuration), with the long-tail group rule chosen for the data (the official
thresholds, unless they leave a group empty or tiny; then the paper's 20% rule or thresholds fitted to the
data, with the reason in a comment), and says how to train the SASRec and LLMInit baselines next to it and
compare them. The template comes from the dataset's own item fields (esrkit/prompts/scaffold.py). Both files
are checked by loading them back before anything is written.
"""

from __future__ import annotations

import re
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from esrkit.config import config_from_dict, resolve_recipe
from esrkit.data.groups import compute_groups, group_sizes, group_warnings, small_groups, suggested_thresholds
from esrkit.data.sequences import SequenceData
from esrkit.data.stats import default_thresholds
from esrkit.models import ENCODERS
from esrkit.prompts.scaffold import scaffold_templates
from esrkit.prompts.templates import (
    build_item_prompts,
    build_user_prompts,
    load_templates,
    templates_from_dict,
)
from esrkit.reporting.collect import BACKBONE_LABELS
from esrkit.resources import KIND_DIRS, find_resource, list_resources
from esrkit.utils.io import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LONG_HISTORY = 50  # mean length above which the recipe comments on the cost of per-step teachers


@dataclass
class Scaffold:
    recipe_path: Path
    templates_path: Path
    recipe: str
    templates: str
    group_note: str
    sample_item: str
    sample_user: str


def check_targets(name: str, targets: dict[str, Path], force: bool) -> None:
    """A valid file name that shadows no other recipe or template; our own earlier files only with
    ``force``."""
    if not NAME.match(name):
        raise ValueError(
            f"recipe name {name!r}: use letters, digits, '-', '_' or '.' (it becomes a file name)"
        )
    for kind, target in targets.items():
        if name in list_resources(kind) and find_resource(kind, name).resolve() != target.resolve():
            raise ValueError(
                f"a {kind} named {name!r} exists already ({find_resource(kind, name)}); choose another name"
            )
        if target.exists() and not force:
            raise FileExistsError(f"{target} exists (pass --force to replace it)")


def check_choices(provider: str, backbone: str, preset: str = "llmesr") -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; there are {', '.join(PRESETS)}")
    if preset == "best" and provider == "none":
        raise ValueError("--preset best starts from the LLM embeddings: it needs a provider, not none")
    if provider != "none":
        find_resource("provider", provider)  # names the known providers when it is not one of them
    if backbone not in ENCODERS:
        raise ValueError(f"unknown backbone {backbone!r}; registered: {', '.join(ENCODERS.names())}")


def choose_groups(data: SequenceData, max_len: int) -> tuple[dict[str, object], str]:
    """Recipe keys for the long-tail groups, and the reason for the choice (a comment)."""
    ts_user, ts_item = default_thresholds(data.name)
    if not group_warnings(data, "test", ts_user, ts_item, "official", max_len):
        return (
            {"group_rule": "official", "ts_user": ts_user, "ts_item": ts_item},
            f"the official rule's thresholds {ts_user}/{ts_item} give every group enough users here",
        )
    empty = ", ".join(
        f"{k:,} {n}"
        for n, k in small_groups(compute_groups(data, "test", ts_user, ts_item, "official", max_len)).items()
    )
    pareto = compute_groups(data, "test", rule="pareto", max_len=max_len)
    if not small_groups(pareto):
        sizes = group_sizes(pareto)
        return (
            {"group_rule": "pareto"},
            (
                f"the official thresholds {ts_user}/{ts_item} leave {empty}; the paper's 20% rule gives "
                f"{sizes['tail users']:,} tail users, {sizes['tail-item targets']:,} tail-item targets"
            ),
        )
    fitted_user, fitted_item = suggested_thresholds(data, "test", max_len)
    return (
        {"group_rule": "official", "ts_user": fitted_user, "ts_item": fitted_item},
        (
            f"the official thresholds {ts_user}/{ts_item} leave {empty}, and so does the 20% rule; "
            "thresholds fitted to this data (check `esrkit data stats` for the group sizes)"
        ),
    )


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f'"{v}"' if isinstance(v, str) else str(v)


def _line(key: str, value: object, comment: str = "") -> str:
    """``key = value`` with its comment aligned, so the recipe reads as a table."""
    text = f"{key} = {_value(value)}"
    return f"{text:<30} # {comment}" if comment else text


def _comment(text: str) -> list[str]:
    return [f"# {part}" for part in textwrap.wrap(text, 106, break_on_hyphens=False)]


def _command(args: list[str], overrides: list[str]) -> list[str]:
    """``args`` then ``--set`` each override, as indented comment lines continued with a backslash, each
    ``--set`` kept on the line of its value."""
    words = [*args, *(f"--set {override}" for override in overrides)]
    lines, line = [], "#  "
    for word in words:
        if len(line) + len(word) > 104:
            lines.append(line + " \\")
            line = "#     "
        line += " " + word
    return [*lines, line]


def recipe_text(
    name: str,
    dataset: str,
    data: SequenceData,
    provider: str,
    backbone: str,
    groups: dict[str, object],
    group_note: str,
    max_len: int = 200,
    preset: str = "llmesr",
) -> str:
    lengths = data.lengths()
    mean = float(lengths.mean()) if lengths.size else 0.0
    longest = int(lengths.max()) if lengths.size else 0
    flag = "" if preset == "llmesr" else f" --preset {preset}"
    description, intro, sections = PRESETS[preset](name, data, backbone, mean)
    lines = [
        *_comment(
            f"Recipe {name!r}, written by `esrkit recipe new {name} --dataset {dataset}{flag}` on "
            f"{time.strftime('%Y-%m-%d')}. Dataset {data.name!r}: {data.n_users:,} users, "
            f"{data.n_items:,} items, {data.n_interactions:,} interactions, history length mean "
            f"{mean:.1f} / max {longest}."
        ),
        "#",
        *intro,
        "# Every key and its default: esrkit/config.py (unknown keys are errors). --set section.key=value",
        "# overrides anything for one run; --seeds 42,43,44 trains several seeds.",
        "",
        _line("description", description),
        _line("output_dir", "runs"),
        "",
        "[data]",
        _line("path", dataset, "a processed dataset (esrkit data prepare), relative to where esrkit runs"),
        _line("name", data.name),
        *_comment(
            f"Long-tail groups of the result tables: {group_note}. Official rule: a tail user's test "
            "input is shorter than ts_user, a tail item has fewer than ts_item users; pareto: the top "
            "20% of users by length and of items by popularity are head."
        ),
        *[_line(k, v) for k, v in groups.items()],
        _line("max_len", max_len, "the most recent items a model reads per user"),
        "",
        "[embedding]",
        _line("provider", provider, "esrkit providers: offline (no download), minilm, openai, llama, ..."),
        _line("templates", name, f"recipes/prompts/{name}.toml, written with this recipe: edit the wording"),
        "",
        *sections,
    ]
    return "\n".join(lines)


def llmesr_preset(name: str, data: SequenceData, backbone: str, mean: float) -> tuple[str, list, list]:
    """LLM-ESR with the official settings, and the paper's two baselines beside it."""
    objective = {"sasrec": "", "bert4rec": " (cloze objective)", "gru4rec": " (last-item objective)"}
    intro = [
        f"# Train LLM-ESR:  esrkit train -r {name}          (run folders: runs/{name}/seed-<seed>/)",
        "# The baselines it is compared with (the paper's single-view models use 128 dimensions):",
        (
            f"#   esrkit train -r {name} --name {name}-sasrec --set model.name=id --set model.hidden=128 "
            "--set embedding.provider=none"
        ),
        f"#   esrkit train -r {name} --name {name}-llminit --set model.name=llminit --set model.hidden=128",
        f"#   esrkit report runs/ --out reports/{name}    (Table 1: overall and long-tail groups)",
        "# For deploying, `esrkit recipe new ... --preset best` writes esrkit's recommended configuration",
        "# (LLMInit-CE with text neighbours: docs/FULL_RANKING.md).",
    ]
    sections = [
        "[model]",
        _line("name", "llmesr", "llmesr | id (the plain backbone) | llminit | cities | melt | rlmrec"),
        _line("backbone", backbone, f"sasrec | bert4rec | gru4rec{objective.get(backbone, '')}"),
        _line("hidden", 64, "per view, as official (LLM-ESR concatenates two views)"),
        _line("alpha", 0.1, "weight of the retrieval-augmented self-distillation"),
    ]
    if mean > LONG_HISTORY:
        sections += _comment(
            'teacher_refresh = "epoch"  (long histories make the 10 teachers per user the '
            "largest cost of a step; per-epoch teachers are cheaper but not the official "
            "schedule: benchmarks/RESULTS.md)"
        )
    sections += [
        "",
        "[retrieval]",
        _line("n_similar", 10, "similar users that teach each user (found from the user prompts)"),
        *(
            [_line("top_k", data.n_users - 1, f"neighbours kept (100 officially; {data.n_users} users here)")]
            if data.n_users <= 100
            else []
        ),
        "",
        "[train]",
        _line("epochs", 200, "the official schedule: up to 200 epochs, early stopping on validation"),
        _line("patience", 20, "N@10 (sampled protocol); lower both for a first look"),
        _line("batch_size", 128),
        "",
    ]
    return f"LLM-ESR ({backbone}) on {data.name}", intro, sections


@dataclass(frozen=True)
class BestSettings:
    """What validation chose for esrkit's recommended configuration on one backbone (docs/RESULTS.md)."""

    hidden: int  # at most the catalogue's PCA components
    text_neighbours: int  # at most the items - 1
    ema: float
    lr: float
    objective: str  # "" = the backbone's own
    why: str  # the comment on the measured choices
    tune_grid: str = ""  # esrkit tune-bonus options beyond its default grid
    start_gate: bool = False  # model.start_gate: measured on this backbone and chosen


BEST_SETTINGS = {
    "sasrec": BestSettings(
        256,
        10,
        0.998,
        0.0003,
        "",
        "validation chose hidden 256, the average and 3e-4 on both datasets measured",
    ),
    # the validation choice of docs/RESULTS.md, "Another backbone: GRU4Rec"
    "gru4rec": BestSettings(
        128,
        5,
        0.0,
        0.001,
        "seq2seq",
        "GRU4Rec on Scientific: 256 with the average at 3e-4 ranked lower",
        "--betas 0,0.5,1,2 --text-boosts 0,0.5,1,2",  # its choice sat on the default grid's edge
    ),
    # docs/RESULTS.md, "Another backbone: BERT4Rec": the settings measured there (not the width or average)
    "bert4rec": BestSettings(
        128,
        5,
        0.0,
        0.001,
        "",
        "BERT4Rec on Scientific was measured at 128 with the official rate (256 and the average untried)",
        "--betas 0,0.5,1,2 --text-boosts 0,0.5,1,2",
        start_gate=True,  # docs/RESULTS.md, "Another backbone: BERT4Rec on Scientific"
    ),
}


def best_preset(name: str, data: SequenceData, backbone: str, mean: float) -> tuple[str, list, list]:
    """esrkit's recommended configuration (recipes/beauty5-best.toml and scientific-best.toml for SASRec, the
    GRU4Rec and BERT4Rec studies' for those; a plug-in backbone takes SASRec's), the baselines it was measured
    against, and the steps that choose its ranking bonus and ship it."""
    best = BEST_SETTINGS.get(backbone, BEST_SETTINGS["sasrec"])
    neighbours = min(best.text_neighbours, data.n_items - 1)
    # the table starts from a PCA of the item embeddings, which has at most n_items components
    hidden = next(h for h in (256, 128, 64, 32, 16, 8) if h <= min(best.hidden, data.n_items))
    shared = [
        "model.loss=ce",
        "eval.valid_protocol=full",
        "model.hidden=128",
        "train.ema=0",
        "train.lr=0.001",
    ]
    shared += ["model.causal=true"] if backbone == "sasrec" else []
    plain_start = ["model.start_gate=false"] if best.start_gate else []  # the baselines start as LLMInit does
    id_only = [
        "model.name=id",
        "embedding.provider=none",
        "model.text_neighbours=0",
        "model.new_item_norm=projection",
        *plain_start,
    ]
    llminit = ["model.text_neighbours=0", *plain_start]
    baseline = BACKBONE_LABELS.get(backbone, backbone)
    intro = [
        *_comment(
            "esrkit's recommended configuration for deploying (docs/FULL_RANKING.md; the recipes "
            "beauty5-best and scientific-best): LLMInit trained with softmax cross-entropy over every item, "
            "each item's vector mixed with its nearest items' by text"
            + (", a moving average of the weights" if best.ema else "")
            + ", epochs selected on validation full-ranking N@10 (a deployed recommender ranks the whole "
            "catalogue)."
        ),
        "# Train it (run folders: runs/NAME/seed-<seed>/), choose its ranking bonus on validation, ship it:",
        f"#   esrkit train -r {name} --seeds 42,43,44",
        f"#   esrkit tune-bonus runs/{name}/seed-* {best.tune_grid}".rstrip(),
        f"#   esrkit export runs/{name}/seed-42 -o exports/{name}    (with the options tune-bonus prints)",
        "# If items join between retrains, choose the ranking terms on a validation split that holds new",
        "# items (10% of the items held out of training and added from their text, as serving adds them):",
        *_command(
            ["esrkit", "train", "-r", name, "--name", f"{name}-new-items", "--seeds", "42,43,44"],
            ["data.cold_items=0.1"],
        ),
        f"#   esrkit tune-bonus runs/{name}-new-items/seed-* --new-items",
        f"# The baselines it is measured against: {baseline}-CE (no LLM), LLMInit-CE (no text neighbours):",
        *_command(["esrkit", "train", "-r", name, "--name", f"{name}-{backbone}-ce"], id_only + shared),
        *_command(["esrkit", "train", "-r", name, "--name", f"{name}-llminit-ce"], llminit + shared),
        f"#   esrkit report runs/ --out reports/{name}    (both protocols, long-tail groups)",
    ]
    measured = "sasrec, gru4rec and bert4rec are measured; another encoder takes SASRec's settings"
    sections = [
        "[model]",
        _line("name", "llminit", "the item table starts from the LLM embeddings' PCA"),
        _line("backbone", backbone, measured),
        *(
            [_line("objective", best.objective, "the next item at every position, not only the last")]
            if best.objective
            else []
        ),
        _line(
            "hidden",
            hidden,
            best.why if hidden == best.hidden else f"at most the {data.n_items} items' PCA components",
        ),
        _line("loss", "ce", "softmax cross-entropy over every item (fused: bounded memory)"),
        *([_line("causal", True, "textbook SASRec attention")] if backbone == "sasrec" else []),
        _line(
            "text_neighbours", neighbours, "nearest items by text mixed into each item (10 and 5 measured)"
        ),
        _line("new_item_norm", "trained", "items added later from their text get the trained rows' length"),
        *(
            [_line("start_gate", True, "how much of its text start each item keeps is learned")]
            if best.start_gate
            else []
        ),
        _line("neighbour_boost", 0.0, "ranking only: choose it after training with esrkit tune-bonus"),
        _line("text_boost", 0.0, "ranking only: the dense text term, chosen with it by esrkit tune-bonus"),
        _line("popularity_tilt", 0.0, "ranking only: a per-user popularity offset (tune-bonus --tilts)"),
        "",
        "[train]",
        _line("epochs", 200, "up to 200 epochs, early stopping on validation"),
        _line("patience", 20, "full-ranking N@10, the official patience; lower both for a first look"),
        _line("batch_size", 128),
        _line(
            "ema",
            best.ema,
            "validate and keep a moving average of the weights"
            if best.ema
            else "no average: the setting measured on this backbone",
        ),
        _line(
            "lr", best.lr, "the rate validation chose with the average" if best.ema else "the official rate"
        ),
        "",
        "[eval]",
        _line("valid_protocol", "full", "epochs selected on full-ranking N@10"),
        "",
    ]
    return f"LLMInit-CE with text neighbours ({backbone}) on {data.name}", intro, sections


PRESETS = {"llmesr": llmesr_preset, "best": best_preset}  # --preset of esrkit recipe new


def scaffold(
    name: str,
    dataset: str | Path,
    provider: str = "minilm",
    backbone: str = "sasrec",
    out: str | Path = ".",
    force: bool = False,
    max_len: int = 200,
    preset: str = "llmesr",
) -> Scaffold:
    """Build (and check) the recipe and template texts; nothing is written (see ``write``). Every option is
    checked before the dataset is read."""
    out = Path(out)
    recipe_path = out / KIND_DIRS["recipe"] / f"{name}.toml"
    templates_path = out / KIND_DIRS["prompt"] / f"{name}.toml"
    check_targets(name, {"recipe": recipe_path, "prompt": templates_path}, force)
    check_choices(provider, backbone, preset)
    data = SequenceData.load(dataset)
    templates = scaffold_templates(data, name)
    groups, note = choose_groups(data, max_len)
    recipe = recipe_text(name, str(dataset), data, provider, backbone, groups, note, max_len, preset)
    # a text that does not load back is a bug here, not the user's problem: fail before writing anything
    parsed = templates_from_dict(tomllib.loads(templates), name=name)
    tree = tomllib.loads(recipe)
    tree["embedding"]["templates"] = (
        "generic"  # the new template is checked above and exists only once written
    )
    config_from_dict(tree)
    items = build_item_prompts(data, parsed)
    item = next((p for p in items if "unknown" not in p), items[0])
    users = build_user_prompts(data, parsed)
    return Scaffold(recipe_path, templates_path, recipe, templates, note, item, users[0] if users else "")


def write(s: Scaffold) -> None:
    """Write both files (each to a temporary file renamed into place)."""
    atomic_write_text(s.templates_path, s.templates)
    atomic_write_text(s.recipe_path, s.recipe)


def check_written(s: Scaffold) -> None:
    """Load the written files the way ``esrkit train`` will."""
    resolve_recipe(str(s.recipe_path))
    load_templates(str(s.templates_path))
