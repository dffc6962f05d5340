"""Command-line options shared by several commands."""

from __future__ import annotations

import functools

import click

from esrkit.config import RANKING_OPTIONS


def _term_options(name: str, value_help: str, items_help: str, tail_help: str) -> list:
    """One ranking-time term as three options: ``--NAME`` (its weight), ``--NAME-items`` (how many of the last
    items it reads) and ``--NAME-tail`` (how much more rarer items get), named as the config fields."""
    flag, weight, count = name.replace("_", "-"), click.FloatRange(min=0), click.IntRange(min=1)
    return [
        click.option(f"--{flag}", type=weight, help=value_help),
        click.option(f"--{flag}-items", type=count, help=f"{items_help} (model.{name}_items)."),
        click.option(f"--{flag}-tail", type=weight, help=f"{tail_help} (model.{name}_tail)."),
    ]


def ranking_options(verb: str):
    """The ranking-time model options (``config.RANKING_OPTIONS``) as ``--neighbour-boost``, ``--text-boost``,
    ``--popularity-tilt`` and their refinements, collected into one ``ranking`` dict of those given (for
    ``load_run(ranking=...)``)."""
    options = [
        *_term_options(
            "neighbour_boost",
            f"LLMInit with text neighbours: {verb} with this model.neighbour_boost instead of the run's "
            "(choose it with `esrkit evaluate RUN --split valid`; training does not use it; 0 turns the "
            "bonus off).",
            "... the bonus goes to the text neighbours of the last M items",
            "... rarer neighbours get more of it",
        ),
        *_term_options(
            "text_boost",
            f"LLMInit with text neighbours: {verb} with this model.text_boost instead of the run's: every "
            "item gets it times its cosine by text with the user's last items (0 turns it off).",
            "... the last M items",
            "... items rarer than average get more of it",
        ),
        click.option(
            "--popularity-tilt",
            type=click.FloatRange(min=0),
            help=f"LLMInit with text neighbours: {verb} with this model.popularity_tilt instead of the "
            "run's: item i gets it times (h_u - c) z_i, so a user whose last items are rarer than the "
            "average interaction's sees rarer items (0 turns it off).",
        ),
        click.option(
            "--popularity-tilt-items",
            type=click.IntRange(min=1),
            help="... h_u: the mean popularity z of the last M items (model.popularity_tilt_items).",
        ),
    ]

    def decorate(fn):
        def wrapper(*args, **kwargs):
            given = {name: kwargs.pop(name) for name in RANKING_OPTIONS}  # click names them as the config
            return fn(*args, ranking={k: v for k, v in given.items() if v is not None}, **kwargs)

        wrapper = functools.update_wrapper(wrapper, fn)
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate
