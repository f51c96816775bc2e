"""Turn clinicians' "flag as wrong" feedback (recorded by the web demo) into a new training split.

    python -m data_prep.feedback merge --feedback FEEDBACK_DIR --dataset_dir SPLIT_DIR --out NEW_SPLIT_DIR

Writes a **new** split folder ``NEW_SPLIT_DIR`` (refused if it already holds a ``split.csv`` or is a file: a merge
never overwrites, there is no ``--overwrite``; ``SPLIT_DIR`` is only read): ``split.csv`` = every original row
unchanged + one ``training`` row per flagged image that is in no split yet (pixel-hash deduplicated; a near-copy of
a validation or test image by perceptual hash is left out; the latest flag of an image by time wins, and relabels a
training row an earlier merge added), with a ``provenance`` column; ``merge.json`` (counts: flags, added per class,
duplicates skipped per split, near-copies of held-out images left out, relabelled rows, label conflicts; flags that
disagree on an image's class), ``split.json``, ``split_stats.csv``/``.md`` and ``image_hashes.csv``. Train on it
with the gated retraining, ``python -m mednet.app.retrain --run RUN --dataset_dir NEW_SPLIT_DIR --out DIR``.
See :func:`mednet.data.feedback.merge_feedback`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from mednet.data.feedback import merge_feedback

__all__ = ["COMMANDS", "merge", "main"]


def merge(feedback: str, dataset_dir: str, out: str) -> Path:
    """``--feedback`` folder (``feedback.csv`` + ``images/``), ``--dataset_dir`` split folder, ``--out`` new folder."""
    return merge_feedback(feedback, dataset_dir, out)


#: the subcommands: ``python -m data_prep.feedback <command> --flags``
COMMANDS = {"merge": merge}

_USAGE = ("usage: python -m data_prep.feedback merge --feedback FEEDBACK_DIR --dataset_dir SPLIT_DIR "
          "--out NEW_SPLIT_DIR")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the subcommand named first in ``argv`` (default ``sys.argv[1:]``) with :func:`mednet.cli.run_cli`."""
    from mednet.cli import run_cli

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_USAGE + "\n\n" + (__doc__ or "").strip().split("\n\n", 1)[-1])
        sys.exit(0 if args else 2)
    if args[0] not in COMMANDS:
        print(f"mednet error: unknown command {args[0]!r} (expected one of {', '.join(COMMANDS)})\n{_USAGE}",
              file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = args[1:]
    run_cli(COMMANDS[args[0]])


if __name__ == "__main__":
    main()
