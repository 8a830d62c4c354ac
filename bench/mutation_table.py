"""The table of bench/mutation.sh: per module, what happened to its mutants, and the survivors.

    python bench/mutation_table.py REPORT.tsv bench/mutation-equivalent.txt

REPORT.tsv has one row per module: name, seconds, the path of `mutmut results --all true`.
The equivalent file lists mutants that cannot change behaviour, one per line: the mutant's
name, then its reason. The kill rate counts killed and timed-out mutants (a mutant that makes a
test hang is caught) over every mutant that is not equivalent; a mutant no test of the module
reaches, or whose test run ended with any other exit ("suspicious" in mutmut's words: a crash),
counts as not killed.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

CAUGHT = {"killed", "timeout", "segfault"}  # "suspicious" (any other exit) is listed, not counted


def read_results(path: Path) -> dict[str, str]:
    results = {}
    for line in path.read_text().splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            results[name] = status
    return results


def read_equivalent(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    reasons = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.strip().partition(" ")
            reasons[name] = reason.strip()
    return reasons


def main() -> None:
    report, equivalent_file = Path(sys.argv[1]), Path(sys.argv[2])
    equivalent = read_equivalent(equivalent_file)
    rows, survivors, wrongly_listed = [], [], []
    for line in report.read_text().splitlines():
        module, seconds, results_path = line.split("\t")
        results = read_results(Path(results_path))
        counts = Counter(results.values())
        same = [name for name in results if name in equivalent]
        considered = len(results) - len(same) - counts["skipped"]
        caught = sum(1 for name, status in results.items() if status in CAUGHT and name not in equivalent)
        wrongly_listed += [(module, name, status) for name in same if (status := results[name]) in CAUGHT]
        rate = caught / considered if considered else float("nan")
        rows.append(
            (
                module,
                len(results),
                counts["killed"],
                counts["timeout"],
                counts["survived"],
                counts["no tests"],
                counts["suspicious"],
                len(same),
                rate,
                int(seconds),
            )
        )
        survivors += [(module, name, status) for name, status in results.items() if status not in CAUGHT and name not in equivalent]
    print(
        f"\n{'module':<14}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'no test':>8}{'odd exit':>9}{'equiv.':>7}{'kill rate':>10}{'seconds':>9}"
    )
    for module, total, killed, timeout, survived, untested, odd, same, rate, seconds in rows:
        print(f"{module:<14}{total:>8}{killed:>8}{timeout:>8}{survived:>9}{untested:>8}{odd:>9}{same:>7}{rate:>10.1%}{seconds:>9}")
    print(f"\nnot killed ({len(survivors)}): show one with `cd WORK/MODULE && mutmut show NAME`")
    for module, name, status in survivors:
        print(f"  {module:<14}{status:<10}{name}")
    if wrongly_listed:  # a test tells them apart: take them off the equivalent list
        print(f"\nlisted as equivalent, yet caught ({len(wrongly_listed)}):")
        for module, name, status in wrongly_listed:
            print(f"  {module:<14}{status:<10}{name}")


if __name__ == "__main__":
    main()
