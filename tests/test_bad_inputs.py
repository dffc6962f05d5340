"""A table of bad inputs and injected faults, each run through the real CLI (in-process): every one must exit
non-zero, name its file or option in the message, and leave every file that existed before unchanged."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from esrkit.cli.main import main
from tests.conftest import TINY_RUN, copy_tree

RUN = "runs/tiny/seed-42"
TINY_ARGS = [arg for option in TINY_RUN for arg in ("--set", option)]
TRAIN = ["train", "--recipe", "demo", "-q", *TINY_ARGS]


class Workspace:
    """The folder a case runs in (the current directory), with writers for the files a case needs."""

    def __init__(self, root: Path, tiny_run: Callable[[], Path]) -> None:
        self.root, self._tiny_run = root, tiny_run

    def text(self, name: str, text: str) -> str:
        """A text file, gzipped when its name ends in .gz."""
        data = text.encode("utf-8")
        return self.bytes(name, gzip.compress(data) if name.endswith(".gz") else data)

    def lines(self, name: str, lines: list[str]) -> str:
        return self.text(name, "".join(line + "\n" for line in lines))

    def bytes(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return name

    def npy(self, name: str, array: np.ndarray, allow_pickle: bool = False) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array, allow_pickle=allow_pickle)
        return name

    def trained_run(self) -> Path:
        """A finished tiny run in runs/tiny/seed-42 with its workdir .esrkit (copied)."""
        copy_tree(self._tiny_run(), self.root)
        return self.root / RUN

    def dataset(self, name: str = "ds") -> str:
        from esrkit.data.sequences import SequenceData

        seqs = [[1, 2, 3], [2, 3, 4, 5], [1, 3, 5, 7, 8], [4, 4, 6, 2, 1, 8], [6, 7, 8]]
        attrs = [{"title": f"Item {i}"} for i in range(1, 9)]
        SequenceData.from_sequences(seqs, n_items=8, item_attrs=attrs, name="tiny").save(self.root / name)
        return name

    def cache_file(self, data: bytes) -> None:
        """A damaged embedding cache for the offline provider."""
        from esrkit.embedding.cache import cache_directory
        from esrkit.providers import load_provider

        folder = cache_directory(self.root / ".esrkit", load_provider("offline").identity)
        folder.mkdir(parents=True)
        (folder / "vectors.sqlite").write_bytes(data)

    def full_disk(self, name: str = "full") -> str:
        """A 64 KiB tmpfs, filled: writes into it fail with ENOSPC (skips where mounting is not allowed)."""
        target = self.root / name
        target.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], capture_output=True, check=False
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        MOUNTS.append(target)
        try:  # fill it up: ENOSPC ends the loop
            with open(target / "filler", "wb", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * 4096)
        except OSError:
            pass
        return name


MOUNTS: list[Path] = []


@dataclass
class Case:
    id: str
    setup: Callable[[Workspace], list[str]]  # writes the inputs, returns the command line
    names: tuple[str, ...]  # what the message must name (file, line, field or option)
    creates_nothing: bool = False  # an option error: no file may appear at all


def review(user: str, item: str, time: int = 1, rating: str = "5.0") -> str:
    return f'{{"reviewerID": "{user}", "asin": "{item}", "unixReviewTime": {time}, "overall": {rating}}}'


REVIEWS = [review(f"u{u}", f"i{k}", 10 * u + k) for u in range(4) for k in range(4)]
RECBOLE = ["user_id:token\titem_id:token\ttimestamp:float"] + [
    f"u{u}\ti{k}\t{10 * u + k}" for u in range(4) for k in range(4)
]
PREPARE = ["data", "prepare", "-o", "out"]


def prepare(fmt: str, *files: str) -> list[str]:
    return [*PREPARE, "--format", fmt, *files]


def last(*values):
    """The last value: a setup writes its files (the earlier arguments, evaluated in order), then gives its
    command line."""
    return values[-1]


def truncate(path: Path, size: int = 1000) -> None:
    path.write_bytes(path.read_bytes()[:size])


def damage(path: Path, n: int = 256) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = bytes(255 - b for b in data[middle : middle + n])
    path.write_bytes(bytes(data))


def rewrite_json(path: Path, change: Callable[[dict], None]) -> None:
    tree = json.loads(path.read_text())
    change(tree)
    path.write_text(json.dumps(tree))


def _unfinished_with_damaged_last(ws: Workspace) -> list[str]:
    run = ws.trained_run()
    (run / "results.json").unlink()
    damage(run / "checkpoints" / "last.safetensors")
    return [*TRAIN, "--name", "tiny", "--resume", "--set", "train.epochs=3"]


def option(key_value: str) -> list[str]:
    return [*TRAIN, "--set", key_value]


def index_build(ws: Workspace, array: np.ndarray, *extra: str, allow_pickle: bool = False) -> list[str]:
    return ["index", "build", "--embeddings", ws.npy("users.npy", array, allow_pickle), *extra, "-o", "idx"]


def trained(ws: Workspace, change: Callable[[Path], object], args: list[str]) -> list[str]:
    """A copy of the tiny run, changed by ``change`` (given the seed folder)."""
    change(ws.trained_run())
    return args


BEST = Path("checkpoints") / "best.safetensors"
BAD_JSONL = ['{"item_id": 1}', "{oops"]
FOUR_USERS = ["1 1", "1 2", "1 3", "2 1", "2 2", "2 3"]

CASES = [
    # ------------------------------------------------------------------ raw files of every supported format
    Case(
        "amazon2014-malformed-json",
        lambda ws: prepare(
            "amazon2014",
            "--reviews",
            ws.lines("reviews_X.json", [*REVIEWS[:2], '{"reviewerID": "u9", "asin": ', *REVIEWS[2:]]),
        ),
        ("reviews_X.json", "line 3", "<json>"),
    ),
    Case(
        "amazon2014-meta-literal",
        lambda ws: prepare(
            "amazon2014",
            "--reviews",
            ws.lines("reviews_X.json", REVIEWS),
            "--meta",
            ws.lines("meta_X.json", ["{'asin': 'i0'}", "{'asin': 'i1', 'title"]),
        ),
        ("meta_X.json", "line 2"),
    ),
    Case(
        "amazon2014-nan-rating",
        lambda ws: prepare(
            "amazon2014", "--reviews", ws.lines("reviews_X.json", [*REVIEWS, review("u1", "i9", 3, "NaN")])
        ),
        ("reviews_X.json", "line 17", "overall"),
    ),
    Case(
        "amazon2018-bad-time",
        lambda ws: prepare(
            "amazon2018",
            "--reviews",
            ws.lines("Fashion.json", [REVIEWS[0], review("u1", "i1").replace("1,", '"soon",', 1)]),
        ),
        ("Fashion.json", "line 2", "unixReviewTime"),
    ),
    Case(
        "amazon-truncated-gzip",
        lambda ws: prepare(
            "amazon2014",
            "--reviews",
            ws.bytes("reviews_X.json.gz", gzip.compress(("\n".join(REVIEWS) + "\n").encode())[:40]),
        ),
        ("reviews_X.json.gz", "cannot read"),
    ),
    Case(
        "amazon-empty-file",
        lambda ws: prepare("amazon2014", "--reviews", ws.text("reviews_X.json", "\n \n")),
        ("reviews_X.json", "empty"),
    ),
    Case(
        "yelp-bad-date",
        lambda ws: prepare(
            "yelp",
            "--reviews",
            ws.lines(
                "review.json",
                [json.dumps({"user_id": "a", "business_id": "b", "date": "yesterday", "stars": 5})],
            ),
        ),
        ("review.json", "line 1", "date"),
    ),
    Case(
        "yelp-missing-field",
        lambda ws: prepare(
            "yelp",
            "--reviews",
            ws.lines("review.json", [json.dumps({"user_id": "a", "date": "2010-01-01", "stars": 5})]),
        ),
        ("review.json", "line 1", "business_id"),
    ),
    Case(
        "inter-non-integer-item",
        lambda ws: prepare("inter", "--input", ws.lines("inter.txt", ["1 1", "1 2", "1 B00X", "1 3"])),
        ("inter.txt", "line 3", "'B00X'"),
    ),
    Case(
        "s3rec-bad-token",
        lambda ws: prepare("s3rec", "--input", ws.lines("Beauty.txt", ["1 1 2 3", "2 2 x 1"])),
        ("Beauty.txt", "line 2", "'x'"),
    ),
    Case(
        "unisrec-incomplete-set",
        lambda ws: prepare(
            "unisrec",
            "--input",
            ws.lines(
                "uni/S.train.inter", ["user_id:token\titem_id_list:token_seq\titem_id:token", "0\t0 1\tnine"]
            ),
        ),
        ("S.train.inter",),
    ),
    Case(
        "lcrec-bad-json",
        lambda ws: prepare(
            "lcrec", "--input", ws.bytes("S.inter.json", b'{"0": [0, 1, 2],\n "1": [1, 2, 3\n}')
        ),
        ("S.inter.json", "line 3"),
    ),
    Case(
        "recbole-bad-header",
        lambda ws: prepare("recbole", "--input", ws.lines("a.inter", ["user_id\titem_id", "1\t2"])),
        ("a.inter", "line 1", "user_id"),
    ),
    Case(
        "recbole-nan-timestamp",
        lambda ws: prepare(
            "recbole", "--input", ws.lines("r.inter", [*RECBOLE[:5], "u1\ti3\tnan", *RECBOLE[5:]])
        ),
        ("r.inter", "line 6", "timestamp", "'nan'"),
    ),
    Case(
        "recbole-bad-float",
        lambda ws: prepare("recbole", "--input", ws.lines("r.inter", [*RECBOLE[:3], "u0\ti9\tnoon"])),
        ("r.inter", "line 4", "timestamp", "'noon'"),
    ),
    Case(
        "items-jsonl-malformed",
        lambda ws: prepare(
            "s3rec",
            "--input",
            ws.lines("Beauty.txt", ["1 1 2 3", "2 2 3 1"]),
            "--items",
            ws.lines("items.jsonl", BAD_JSONL),
        ),
        ("items.jsonl", "line 2"),
    ),
    Case(
        "items-csv-no-id-column",
        lambda ws: prepare(
            "s3rec",
            "--input",
            ws.lines("Beauty.txt", ["1 1 2 3"]),
            "--items",
            ws.lines("items.csv", ["name,title", "x,y"]),
        ),
        ("items.csv", "id column"),
    ),
    Case(
        "huge-token-quoted-short",
        lambda ws: prepare(
            "inter", "--input", ws.lines("inter.txt", ["1 1", "1 " + "7x" * 2_000_000, "1 2"])
        ),
        ("inter.txt", "line 2", "4,000,000 characters"),
    ),
    Case(
        "kcore-removes-everyone",
        lambda ws: [
            *prepare("amazon2014", "--reviews", ws.lines("reviews_X.json", REVIEWS)),
            "--set",
            "kcore=true",
            "--set",
            "user_min=9",
        ],
        ("user_min=9", "kcore", "reviews_X.json"),
    ),
    Case(
        "prepare-unknown-option",
        lambda ws: [*prepare("inter", "--input", ws.lines("inter.txt", ["1 1"])), "--set", "usr_min=2"],
        ("usr_min",),
    ),
    Case(
        "prepare-negative-threshold",
        lambda ws: [*prepare("inter", "--input", ws.lines("inter.txt", ["1 1"])), "--set", "user_min=-1"],
        ("user_min",),
    ),
    Case(
        "prepare-output-exists",
        lambda ws: last(
            ws.text("out/keep.txt", "mine"), prepare("inter", "--input", ws.lines("inter.txt", FOUR_USERS))
        ),
        ("out", "--overwrite"),
    ),
    # ------------------------------------------------------------------ processed datasets
    Case(
        "stats-not-a-dataset",
        lambda ws: last(ws.text("folder/readme.txt", "hi"), ["data", "stats", "folder"]),
        ("folder", "dataset.json"),
    ),
    Case(
        "stats-damaged-offsets",
        lambda ws: last(
            ws.dataset(), ws.bytes("ds/offsets.npy", b"\x93NUMPY garbage"), ["data", "stats", "ds"]
        ),
        ("offsets.npy",),
    ),
    Case(
        "stats-damaged-dataset-json",
        lambda ws: last(ws.dataset(), ws.text("ds/dataset.json", '{"format": '), ["data", "stats", "ds"]),
        ("dataset.json",),
    ),
    # ------------------------------------------------------------------ options (nothing may be created)
    Case("epochs-negative", lambda ws: option("train.epochs=-1"), ("train.epochs", "demo.toml"), True),
    Case("batch-size-zero", lambda ws: option("train.batch_size=0"), ("train.batch_size",), True),
    Case("watch-unknown", lambda ws: option("train.watch=foo@10"), ("train.watch", "ndcg@10"), True),
    Case("dropout-above-one", lambda ws: option("model.dropout=2"), ("model.dropout",), True),
    Case("backbone-unknown", lambda ws: option("model.backbone=nope"), ("model.backbone", "sasrec"), True),
    Case("model-unknown", lambda ws: option("model.name=nope"), ("model.name", "llmesr"), True),
    Case("loss-unknown", lambda ws: option("model.loss=hinge"), ("model.loss", "bce"), True),
    Case(
        "protocol-unknown",
        lambda ws: option("eval.protocols=['sampled','all']"),
        ("eval.protocols", "'all'"),
        True,
    ),
    Case("lr-zero", lambda ws: option("train.lr=0"), ("train.lr",), True),
    Case("type-mismatch", lambda ws: option("train.epochs=many"), ("train.epochs", "'many'"), True),
    Case("unknown-key", lambda ws: option("model.alpah=1"), ("alpah",), True),
    Case("override-syntax", lambda ws: option("model.alpha"), ("model.alpha", "key=value"), True),
    Case("recipe-missing", lambda ws: ["train", "--recipe", "no-such-recipe"], ("no-such-recipe",), True),
    Case("seeds-not-integers", lambda ws: [*TRAIN, "--seeds", "42,x"], ("--seeds",), True),
    Case("name-escapes-output", lambda ws: [*TRAIN, "--name", "../../x"], ("--name", "'..'"), True),
    Case("name-absolute", lambda ws: [*TRAIN, "--name", str(ws.root.parent / "abs")], ("--name",), True),
    Case(
        "study-name-escapes",
        lambda ws: ["study", "providers", "--recipe", "demo", "-p", "offline", "--name", "../x", "--dry-run"],
        ("--name",),
        True,
    ),
    Case(
        "study-only-misspelt",
        lambda ws: ["study", "compare", "cold-scientific", "--only", "sasrec-cee", "--dry-run"],
        ("--only", "'sasrec-cee'", "did you mean 'sasrec-ce'?", "its runs: pop, sasrec-ce"),
        True,
    ),
    Case(
        "sweep-bad-grid-value",
        lambda ws: ["sweep", "--recipe", "demo", "--grid", "model.alpha=0.5,-1", "--dry-run"],
        ("model.alpha = -1",),
        True,
    ),
    Case(
        "sweep-bad-select",
        lambda ws: ["sweep", "--recipe", "demo", "--grid", "model.alpha=0.5", "--select", "auc", "--dry-run"],
        ("--select", "'auc'"),
        True,
    ),
    Case(
        "study-unknown-provider",
        lambda ws: ["study", "providers", "--recipe", "demo", "-p", "offline,gpt-99", "--dry-run"],
        ("embedding.provider = 'gpt-99'",),
        True,
    ),
    Case(
        "study-seeds-not-integers",
        lambda ws: ["study", "providers", "--recipe", "demo", "-p", "offline", "--seeds", "4x", "--dry-run"],
        ("--seeds", "'4x'"),
        True,
    ),
    # ------------------------------------------------------------------ trained runs
    Case(
        "evaluate-damaged-best",
        lambda ws: trained(ws, lambda run: damage(run / BEST), ["evaluate", RUN]),
        ("best.safetensors", "damaged", "Retrain"),
    ),
    Case(
        "evaluate-truncated-best",
        lambda ws: trained(ws, lambda run: truncate(run / BEST), ["evaluate", RUN]),
        ("best.safetensors",),
    ),
    Case(
        "evaluate-damaged-hash-record",
        lambda ws: trained(
            ws, lambda run: (run / BEST.parent / "hashes.json").write_text("{"), ["evaluate", RUN]
        ),
        ("hashes.json",),
    ),
    Case(
        "resume-damaged-last", _unfinished_with_damaged_last, ("last.safetensors", "--resume cannot continue")
    ),
    Case(
        "rerun-finished",
        lambda ws: trained(ws, lambda run: None, [*TRAIN, "--name", "tiny"]),
        ("runs/tiny/seed-42", "finished run"),
    ),
    Case(
        "evaluate-config-from-newer-esrkit",
        lambda ws: trained(
            ws,
            lambda run: rewrite_json(run / "config.json", lambda t: t["model"].update(future_switch=True)),
            ["evaluate", RUN],
        ),
        ("config.json", "future_switch", "newer esrkit"),
    ),
    Case(
        "evaluate-damaged-config",
        lambda ws: trained(ws, lambda run: (run / "config.json").write_text('{"name": '), ["evaluate", RUN]),
        ("config.json",),
    ),
    Case(
        "evaluate-not-a-run",
        lambda ws: last(ws.text("plain/notes.txt", "x"), ["evaluate", "plain"]),
        ("plain", "config.json"),
    ),
    Case(
        "recommend-bad-row",
        lambda ws: trained(ws, lambda run: None, ["recommend", RUN, "--user", "#abc"]),
        ("--user", "'#abc'"),
    ),
    Case(
        "recommend-k-zero",
        lambda ws: trained(ws, lambda run: None, ["recommend", RUN, "--user", "#0", "-k", "0"]),
        ("-k",),
    ),
    Case(
        "recommend-unknown-user",
        lambda ws: trained(ws, lambda run: None, ["recommend", RUN, "--user", "nobody"]),
        ("--user", "'nobody'"),
    ),
    Case(
        "report-damaged-results",
        lambda ws: trained(
            ws, lambda run: (run / "results.json").write_text('{"test": '), ["report", "runs"]
        ),
        ("results.json",),
    ),
    # ------------------------------------------------------------------ embeddings, caches, indexes
    Case(
        "embed-cache-not-a-database",
        lambda ws: last(
            ws.cache_file(b"not a database" * 100), ["embed", "--dataset", ws.dataset(), "--no-progress"]
        ),
        ("vectors.sqlite", "not a database"),
    ),
    Case("embed-missing-dataset", lambda ws: ["embed", "--dataset", "nowhere"], ("--dataset", "nowhere")),
    Case(
        "embed-unknown-provider", lambda ws: ["embed", "--dataset", ws.dataset(), "-p", "gpt-99"], ("gpt-99",)
    ),
    Case(
        "embed-bad-provider-option",
        lambda ws: ["embed", "--dataset", ws.dataset(), "--set", "provider.nope=1"],
        ("nope",),
    ),
    Case(
        "cache-list-not-a-database",
        lambda ws: last(ws.cache_file(b"\0" * 4096), ["cache", "list"]),
        ("vectors.sqlite",),
    ),
    Case(
        "cache-merge-nothing-there",
        lambda ws: last(ws.text("other/readme", "x"), ["cache", "merge", "other"]),
        ("other",),
    ),
    Case(
        "index-text-file",
        lambda ws: ["index", "build", "--embeddings", ws.text("users.npy", "a,b\n1,2\n"), "-o", "idx"],
        ("users.npy", "not in .npy format"),
    ),
    Case(
        "index-pickled-objects",
        lambda ws: index_build(ws, np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
        ("users.npy", "Python objects"),
    ),
    Case("index-one-dimensional", lambda ws: index_build(ws, np.ones(8, np.float32)), ("users.npy", "2-D")),
    Case(
        "index-nan-rows",
        lambda ws: index_build(ws, np.full((6, 4), np.nan, np.float32), "-k", "2"),
        ("users.npy", "NaN"),
    ),
    Case("index-k-zero", lambda ws: index_build(ws, np.ones((6, 4), np.float32), "-k", "0"), ("-k",)),
    Case(
        "index-ids-wrong-length",
        lambda ws: index_build(
            ws, np.eye(6, dtype=np.float32), "-k", "2", "--ids", ws.text("ids.json", '["a", "b"]')
        ),
        ("ids.json", "--ids"),
    ),
    Case(
        "index-ids-not-json",
        lambda ws: index_build(
            ws, np.eye(6, dtype=np.float32), "-k", "2", "--ids", ws.text("ids.json", "[a, b")
        ),
        ("ids.json",),
    ),
    # ------------------------------------------------------------------ a full disk (tmpfs, root only)
    Case(
        "disk-full-prepare",
        lambda ws: [
            "data",
            "prepare",
            "--format",
            "inter",
            "--input",
            ws.lines("inter.txt", FOUR_USERS),
            "-o",
            ws.full_disk() + "/out",
        ],
        ("full/out", "No space left"),
    ),
    Case(
        "disk-full-embed",
        lambda ws: ["embed", "--dataset", ws.dataset(), "--no-progress", "--workdir", ws.full_disk()],
        ("full", "free space"),
    ),
    Case(
        "disk-full-train",
        lambda ws: [*TRAIN, "--name", "tiny", "--output-dir", ws.full_disk()],
        ("full/tiny/seed-42", "No space left"),
    ),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(m in p.parents or m == p for m in MOUNTS)
    }


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capsys, request) -> None:
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path, lambda: request.getfixturevalue("tiny_run_tree"))
    try:
        args = case.setup(ws)
        before = snapshot(tmp_path)
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        message = out.out + out.err
        assert code not in (0, None), f"exit {code}: {message}"
        for name in case.names:
            assert name in message, f"{name!r} not in: {message}"
        assert "Traceback" not in message and "allow_pickle" not in message
        assert len(message) < 2000, message[:2000]
        after = snapshot(tmp_path)
        changed = [p for p, data in before.items() if after.get(p) != data]
        assert not changed, f"changed or removed: {changed}"
        if case.creates_nothing:
            assert set(after) == set(before), f"created: {sorted(set(after) - set(before))}"
    finally:
        while MOUNTS:
            subprocess.run(["umount", "-l", str(MOUNTS.pop())], check=False)
