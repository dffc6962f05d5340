"""Command-line options shared by several commands."""

from __future__ import annotations

import functools

import click

from esrkit.config import RANKING_OPTIONS


def ranking_options(verb: str):
    """The ranking-time model options (``config.RANKING_OPTIONS``) as ``--neighbour-boost``, ``--text-boost``
    and their refinements, collected into one ``ranking`` dict of those given (for
    ``load_run(ranking=...)``)."""
    options = [
        click.option(
            "--neighbour-boost",
            type=click.FloatRange(min=0),
            help=f"LLMInit with text neighbours: {verb} with this model.neighbour_boost instead of the "
            "run's (choose it with `esrkit evaluate RUN --split valid`; training does not use it; 0 turns "
            "the bonus off).",
        ),
        click.option(
            "--neighbour-boost-items",
            type=click.IntRange(min=1),
            help="... the bonus goes to the text neighbours of the last M items "
            "(model.neighbour_boost_items).",
        ),
        click.option(
            "--neighbour-boost-tail",
            type=click.FloatRange(min=0),
            help="... rarer neighbours get more of it (model.neighbour_boost_tail).",
        ),
        click.option(
            "--text-boost",
            type=click.FloatRange(min=0),
            help=f"LLMInit with text neighbours: {verb} with this model.text_boost instead of the run's: "
            "every item gets it times its cosine by text with the user's last items (0 turns it off).",
        ),
        click.option(
            "--text-boost-items",
            type=click.IntRange(min=1),
            help="... the last M items (model.text_boost_items).",
        ),
        click.option(
            "--text-boost-tail",
            type=click.FloatRange(min=0),
            help="... items rarer than average get more of it (model.text_boost_tail).",
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
