"""docs/DATA.md, "Your own dataset": its commands, exactly as written, on generated raw files of each shape.

The commands are read from the document (the ``<!-- walkthrough: NAME -->`` blocks), so the walkthrough and
this test cannot drift apart. The one change is the document's own step 4, done the way a user would: the
generated recipe's epochs and patience are lowered (to 2 / 2) before training, so the test stays small (40
users, 30 items, the offline provider, one seed).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from esrkit.cli.main import cli
from tests.data.own_data import write_csv, write_jsonl_items, write_recbole

DOC = Path(__file__).resolve().parents[2] / "docs" / "DATA.md"
BLOCK = re.compile(r"<!-- walkthrough: (\w+) -->\s*```bash\n(.*?)```", re.DOTALL)


def walkthrough() -> dict[str, list[list[str]]]:
    """name -> the block's commands as argument lists (without the leading ``esrkit``)."""
    blocks = {}
    for name, body in BLOCK.findall(DOC.read_text()):
        commands = [shlex.split(line) for line in body.replace("\\\n", " ").splitlines() if line.strip()]
        assert all(c[0] == "esrkit" for c in commands), f"{name}: every line is an esrkit command"
        blocks[name] = [c[1:] for c in commands]
    return blocks


def raw_files(kind: str, folder: Path) -> None:
    if kind == "recbole":
        write_recbole(folder, name="mine")
    else:
        write_csv(folder)
        write_jsonl_items(folder)


def step_4(project: Path) -> None:
    """Lower the epochs for a first look, as the walkthrough suggests (an edit of the generated recipe)."""
    recipe = project / "recipes" / "mine.toml"
    text = re.sub(r"^epochs = 200", "epochs = 2", recipe.read_text(), flags=re.MULTILINE)
    recipe.write_text(re.sub(r"^patience = 20", "patience = 2", text, flags=re.MULTILINE))


def test_the_document_has_every_block() -> None:
    blocks = walkthrough()
    assert set(blocks) == {"recbole", "csv", "jsonl", "common"}
    assert [c[0] for c in blocks["common"]] == ["data", "recipe", "train", "train", "train", "report"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["recbole", "csv", "jsonl"])
def test_walkthrough_from_raw_files_to_a_report(kind, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw_files(kind, tmp_path / "raw")
    blocks = walkthrough()
    runner = CliRunner()
    outputs = []
    for args in blocks[kind] + blocks["common"]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, f"esrkit {' '.join(args)}\n{res.output}"
        outputs.append(res.output)
        if args[:2] == ["recipe", "new"]:
            step_4(tmp_path)
    stats, recipe, report = outputs[1], outputs[2], outputs[-1]
    # every user has >= 12 interactions: the official thresholds leave no tail user, and both commands say so
    assert "warning: the official group rule (ts_user=9, ts_item=4) leaves 0 tail users" in stats
    assert "the official thresholds 9/4 leave 0 tail users" in recipe
    assert "['" not in recipe and "name is " in recipe  # the sample prompts read as text
    for protocol in ("sampled", "full"):
        assert f"[{protocol}]" in report
    rows = [
        line.split()[0]
        for line in report.splitlines()
        if line.split()[:1] in (["SASRec"], ["LLMInit"], ["LLM-ESR"])
    ]
    assert rows.count("SASRec") == rows.count("LLMInit") == rows.count("LLM-ESR") == 2  # one row per protocol
    written = sorted(p.name for p in (tmp_path / "reports" / "mine").iterdir())
    assert any(name.endswith(".md") for name in written) and any(name.endswith(".csv") for name in written)
    for run in ("mine", "mine-sasrec", "mine-llminit"):
        log = (tmp_path / "runs" / run / "seed-42" / "train.log").read_text()
        assert " epoch 1: loss " in log and "test (best epoch" in log
