"""Compare two runs of the adversarial sweep case by case: which cases end differently.

    python bench/fault_cases.py --json before.json      # at one commit
    python bench/fault_cases.py --json after.json       # at another
    python bench/fault_diff.py before.json after.json

A case ends the same when its exit code and its error line (temporary paths and timings
normalised) are the same; a refactor should leave every case as it was, a fix only its own.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def outcomes(path: Path) -> dict[tuple[str, str], tuple[int | None, str]]:
    """(group, case) -> (exit code, the error line with paths and timings normalised)."""
    ends = {}
    for outcome in json.loads(path.read_text(encoding="utf-8")):
        said = re.sub(r"/tmp/confusion-faults-[^/\s'\"]+", "BASE", outcome.get("said", ""))
        ends[(outcome["group"], outcome["case"])] = (outcome.get("code"), re.sub(r"\d+(\.\d+)? s\b", "N s", said))
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="outcomes of one sweep (fault_cases.py --json)")
    parser.add_argument("after", type=Path, help="outcomes of another")
    args = parser.parse_args()
    before, after = outcomes(args.before), outcomes(args.after)
    shared = [case for case in before if case in after]
    changed = [case for case in shared if before[case] != after[case]]
    print(
        f"{len(before)} cases before, {len(after)} after, {len(shared)} in both; {len(shared) - len(changed)} end the same, {len(changed)} differently"
    )
    for group, name in changed:
        (code_a, said_a), (code_b, said_b) = before[(group, name)], after[(group, name)]
        print(f"\n{group}: {name}\n  before: exit {code_a}: {said_a[:160]}\n  after:  exit {code_b}: {said_b[:160]}")


if __name__ == "__main__":
    main()
