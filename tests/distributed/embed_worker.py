"""A ``torchrun`` worker for the crash test: ``esrkit embed`` whose rank ``--die-rank`` SIGKILLs itself right
after its ``--die-after``-th committed batch, recording the hashes it committed first (they must survive)."""

from __future__ import annotations

import argparse
import os
import signal
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--die-rank", type=int, default=1)
    parser.add_argument("--die-after", type=int, default=2)
    parser.add_argument(
        "--committed", required=True, help="file the dying rank lists its committed hashes in"
    )
    args, embed_args = parser.parse_known_args()

    from esrkit.embedding.cache import EmbeddingCache

    if int(os.environ.get("RANK", "0")) == args.die_rank:
        original = EmbeddingCache.put
        count = 0

        def put(self, hashes, vectors):
            nonlocal count
            original(self, hashes, vectors)  # committed (one transaction) ...
            count += 1
            with open(args.committed, "a", encoding="utf-8") as fh:
                fh.write("".join(h + "\n" for h in hashes))
                fh.flush()
                os.fsync(fh.fileno())
            if count >= args.die_after:  # ... then killed with no chance to clean up
                os.kill(os.getpid(), signal.SIGKILL)

        EmbeddingCache.put = put

    from esrkit.cli.main import main as esrkit_main

    esrkit_main(["embed", *embed_args])
    sys.exit(0)


if __name__ == "__main__":
    main()
