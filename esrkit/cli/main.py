"""Entry point: ``esrkit <command>``. Subcommands are imported lazily so ``esrkit --help`` stays fast
(sentence-transformers and torch take seconds to import)."""

from __future__ import annotations

import importlib
import logging
import sys

import click

import esrkit
from esrkit.utils.errors import error_text

# command name -> "module:attribute"; each module owns its commands.
COMMANDS: dict[str, str] = {
    "demo": "esrkit.cli.demo:demo",
    "data": "esrkit.cli.data:data",
    "embed": "esrkit.cli.embed:embed",
    "cache": "esrkit.cli.cache:cache",
    "index": "esrkit.cli.index:index",
    "train": "esrkit.cli.train:train",
    "evaluate": "esrkit.cli.train:evaluate",
    "tune-bonus": "esrkit.cli.bonus:tune_bonus",
    "recommend": "esrkit.cli.serve:recommend",
    "export": "esrkit.cli.serve:export",
    "items": "esrkit.cli.serve:items",
    "report": "esrkit.cli.report:report",
    "sweep": "esrkit.cli.sweep:sweep",
    "study": "esrkit.cli.study:study",
    "recipes": "esrkit.cli.info:recipes",
    "recipe": "esrkit.cli.recipe:recipe",
    "providers": "esrkit.cli.info:providers",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._spec_exists(name)]

    @staticmethod
    def _spec_exists(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._spec_exists(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(esrkit.__version__, prog_name="esrkit")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """esrkit: LLM-enhanced sequential recommendation (LLM-ESR) with any embedding provider.

    \b
    Quick start (no network, no API key):
      esrkit demo
    Typical flow:
      esrkit data prepare --format amazon2014 --reviews reviews_Beauty.json.gz \\
          --meta meta_Beauty.json.gz -o beauty
      esrkit embed --provider openai --dataset beauty
      esrkit train --recipe beauty-sasrec
    Your own data (docs/DATA.md, "Your own dataset"):
      esrkit data prepare --format csv --input interactions.csv --items items.csv -o data/mine
      esrkit recipe new mine --dataset data/mine && esrkit train -r mine
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(name)s: %(message)s")
    show_progress_lines()
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


class _StderrLines(logging.Handler):
    """Plain lines on the *current* stderr (click's, so a test runner that captures stderr sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def show_progress_lines(show: bool = True) -> None:
    """Training's one line per epoch (the ``esrkit.progress`` logger, esrkit/training/rundir.py) on stderr;
    ``show=False`` (``esrkit train -qq``) keeps stderr for warnings and errors only."""
    progress = logging.getLogger("esrkit.progress")
    if not any(isinstance(h, _StderrLines) for h in progress.handlers):
        progress.addHandler(_StderrLines())
    progress.propagate = False
    progress.setLevel(logging.INFO if show else logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="esrkit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; finished work is kept and a rerun resumes where it stopped.", err=True)
        sys.exit(130)
    except Exception as exc:  # one clear line, the traceback only with --debug
        if debug:
            raise
        click.echo(f"error: {error_text(exc)}", err=True)
        click.echo("(run with --debug for the full traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
