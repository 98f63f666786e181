"""Every benchmark and campaign command the documents give (``.venv/bin/python
bench/X.py`` or ``.venv/bin/python -m bench.X``) starts as written from the repository's
root: its ``--help`` answers. (A bench module that imports another bench module runs only
as ``-m bench.X``: written as ``bench/X.py`` it fails before its first line of work.)"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from dispenser.testing import ROOT

COMMAND = re.compile(r"\.venv/bin/python (-m bench\.[a-z_]+|bench/[a-z_]+\.py)")
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
           *sorted((ROOT / "bench").glob("*.py"))]
DOCUMENTED = sorted({m.group(1) for path in SOURCES
                     for m in COMMAND.finditer(path.read_text(encoding="utf-8"))})


def test_the_documents_give_bench_commands() -> None:
    assert len(DOCUMENTED) >= 10, DOCUMENTED


@pytest.mark.parametrize("command", DOCUMENTED)
def test_a_documented_bench_command_starts(command: str) -> None:
    args = command.split()
    run = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"{command} --help: {run.stderr[-2000:]}"
    assert "usage" in run.stdout.lower(), run.stdout[:500]
