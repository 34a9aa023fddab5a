"""Markdown tables from bench/wer.py --json runs: streamed vs offline WER per source, per condition.

    python bench/wer_table.py clean.json pink10.json pink5.json ...            # one table, a column each
    python bench/wer_table.py --before old/*.json --after new/*.json           # streamed before -> after

Sources are each batch of the dev set, each corpus group in it, and the whole set (bench/wer.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wer import source_rows


def load(paths: list[Path]) -> list[tuple[str, dict[str, tuple[int, int, int, int]]]]:
    """(condition, {source: (files, words, streamed errors, offline errors)}) per run, in order."""
    runs = []
    for path in paths:
        run = json.loads(path.read_text())
        runs.append((run["condition"], {key: tuple(rest) for key, *rest in source_rows(run["files"])}))
    return runs


def pct(errors: int, words: int) -> str:
    return f"{100 * errors / words:.1f}"


def table(runs) -> list[str]:
    sources = list(runs[0][1])
    lines = ["| source | files | words | " + " | ".join(c for c, _ in runs) + " |",
             "|---|---:|---:|" + "---:|" * len(runs)]
    for source in sources:
        files, words = runs[0][1][source][:2]
        cells = [f"{pct(s, w)} vs {pct(o, w)}" for _, t in runs for _, w, s, o in [t[source]]]
        lines.append(f"| {source} | {files} | {words} | " + " | ".join(cells) + " |")
    return lines


def compare(before, after) -> list[str]:
    """Streamed WER before -> after (offline in brackets) per source and condition."""
    sources = list(before[0][1])
    lines = ["| source | " + " | ".join(c for c, _ in before) + " |", "|---|" + "---:|" * len(before)]
    for source in sources:
        cells = []
        for (_, b), (_, a) in zip(before, after, strict=True):
            _, w, s_old, o = b[source]
            s_new = a[source][2]
            cells.append(f"{pct(s_old, w)} → {pct(s_new, w)} ({pct(o, w)})")
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--before", nargs="+", type=Path, default=[])
    parser.add_argument("--after", nargs="+", type=Path, default=[])
    args = parser.parse_args()
    if args.runs:
        print("\n".join(table(load(args.runs))))
    if args.before:
        print("\n".join(compare(load(args.before), load(args.after))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
