"""Real passages for the search benchmarks, from the shared data folder (../shared/data).

SST-2 sentences (train and dev), STS-B sentences and Shakespeare speeches; to reach a size larger
than those hold together, single Shakespeare lines of three words or more are added, then pairs
of consecutive lines. Duplicates
are dropped, and the order is fixed, so two runs see the same corpus.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")


def _need(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"{path}: missing; the search benchmarks read the shared data folder (../shared/data)")
    return path


def sst2() -> list[str]:
    out = []
    for split in ("train", "dev"):
        with open(_need(DATA / "sst2" / f"{split}.tsv"), encoding="utf-8") as f:
            out += [r[0].strip() for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    return out


def stsb() -> list[str]:
    out = []
    with open(_need(DATA / "stsb" / "train.tsv"), encoding="utf-8") as f:
        for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out += [r[7].strip(), r[8].strip()]
    return out


def shakespeare_speeches() -> list[str]:
    """Blank-line separated speeches, the speaker's name line kept."""
    text = _need(DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("\n\n") if s.strip()]


def shakespeare_lines() -> list[str]:
    text = _need(DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if len(line.split()) >= 3 and not line.endswith(":")]


def shakespeare_line_pairs() -> list[str]:
    lines = shakespeare_lines()
    return [lines[i] + "\n" + lines[i + 1] for i in range(0, len(lines) - 1, 2)]


def passages(n: int) -> list[str]:
    """``n`` distinct real passages (fewer if the data holds fewer)."""
    seen: dict[str, None] = {}
    for source in (sst2, stsb, shakespeare_speeches, shakespeare_lines, shakespeare_line_pairs):
        for text in source():
            if len(text.split()) >= 3:
                seen.setdefault(text, None)
            if len(seen) >= n:
                return list(seen)
    return list(seen)
