"""bench/mutation_table.py: the kill rate over the mutants that are not listed as equivalent."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_kill_rate_leaves_out_listed_mutants_whether_caught_or_not(tmp_path):
    results = tmp_path / "results.txt"
    results.write_text(
        "m.x_a__mutmut_1: killed\nm.x_a__mutmut_2: killed\nm.x_a__mutmut_3: timeout\nm.x_a__mutmut_4: survived\n"
        "m.x_a__mutmut_5: survived\nm.x_a__mutmut_6: killed\nm.x_a__mutmut_7: no tests\n"
    )
    equivalent = tmp_path / "equivalent.txt"
    equivalent.write_text("# header\nm.x_a__mutmut_5 the block size only\nm.x_a__mutmut_6 a test tells it apart after all\n")
    report = tmp_path / "report.tsv"
    report.write_text(f"m\t12\t{results}\n")
    done = subprocess.run([sys.executable, str(BENCH / "mutation_table.py"), str(report), str(equivalent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("m "))
    assert row.split() == ["m", "7", "3", "1", "2", "1", "0", "2", "60.0%", "12"]  # 3 caught of 5 not listed
    assert "survived  m.x_a__mutmut_4" in done.stdout and "no tests  m.x_a__mutmut_7" in done.stdout
    assert "m.x_a__mutmut_5" not in done.stdout.split("not killed")[1].split("listed as equivalent")[0]
    assert done.stdout.rstrip().endswith("killed    m.x_a__mutmut_6")  # listed, yet caught: named
