"""Shell completion: generated from the parser, shipped with the package, working in the
real shells (bash always; zsh where it is installed, and always under CI=true).

The committed scripts in ``contrib/completion/`` are what ``dispenserctl completion`` prints;
after a change to the command line, write them anew:

    .venv/bin/dispenserctl completion bash > contrib/completion/bash/dispenserctl
    .venv/bin/dispenserctl completion zsh > contrib/completion/zsh/_dispenserctl
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from dispenser.testing.cli import CTL, Machine

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {"bash": ROOT / "contrib/completion/bash/dispenserctl",
           "zsh": ROOT / "contrib/completion/zsh/_dispenserctl"}


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_shipped_script_is_what_the_parser_gives(shell: str) -> None:
    ran = Machine.run_ctl("completion", shell)
    assert ran.code == 0, ran
    assert ran.out == SCRIPTS[shell].read_text(), (
        f"{SCRIPTS[shell]} is out of date: write it anew with "
        f"dispenserctl completion {shell} (see this module's docstring)")


def test_the_package_installs_both_scripts_where_the_shells_look() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data_files = pyproject["tool"]["setuptools"]["data-files"]
    assert data_files["share/bash-completion/completions"] == [
        "contrib/completion/bash/dispenserctl"]
    assert data_files["share/zsh/site-functions"] == ["contrib/completion/zsh/_dispenserctl"]
    assert "shtab" in " ".join(pyproject["project"]["dependencies"])


_BASH = """
source <("$CTL" completion bash)
complete -p dispenserctl
for typed in "dispenserctl sh" "dispenserctl orders --state " "dispenserctl diag " \\
             "dispenserctl top --" "dispenserctl submit or"; do
  COMP_LINE="$typed"; COMP_POINT=${#COMP_LINE}
  read -ra COMP_WORDS <<< "$typed"
  [[ "$typed" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  _shtab_dispenserctl dispenserctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
  echo "$typed|${COMPREPLY[*]}"
done
"""


def test_bash_completes_commands_choices_options_and_files(tmp_path: Path) -> None:
    (tmp_path / "orders.jsonl").write_text("")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", _BASH], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CTL": str(CTL)})
    assert done.returncode == 0, done.stderr
    first, *lines = done.stdout.splitlines()
    assert first.startswith("complete ") and first.endswith(" dispenserctl")
    got = {line.split("|")[0]: line.split("|")[1].split() for line in lines}
    assert sorted(got["dispenserctl sh"]) == ["shipment", "shipments"]
    assert "held" in got["dispenserctl orders --state "]
    assert "stock_short" not in got["dispenserctl orders --state "]  # a hold, not a state
    assert got["dispenserctl diag "] == ["registers", "selftest", "printer", "stats"]
    assert {"--once", "--interval", "--json"} <= set(got["dispenserctl top --"])
    assert got["dispenserctl submit or"] == ["orders.jsonl"]


_ZSH = """
fpath=("$SITE" $fpath)
autoload -Uz compinit && compinit -u -d "$SITE/.zcompdump"
print -r -- "registered ${_comps[dispenserctl]}"
# Stand-ins for the completion widgets, which need a line editor: print what they get.
_describe() { local -a items; items=("${(@P)2}"); print -rl -- $items }
_arguments() { : }
compdef() { : }
eval "$(<"$SITE/_dispenserctl")"
_shtab_dispenserctl_commands
print -rl -- $_shtab_dispenserctl_orders_options
"""


def test_zsh_finds_the_function_and_knows_commands_and_choices(tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("zsh is missing under CI (.ci/run installs it)")
        pytest.skip("zsh is not installed (apt-get install zsh)")
    site = tmp_path / "site-functions"  # as share/zsh/site-functions after an install
    site.mkdir()
    shutil.copy(SCRIPTS["zsh"], site / "_dispenserctl")
    assert subprocess.run(["zsh", "-n", str(site / "_dispenserctl")]).returncode == 0
    done = subprocess.run(["zsh", "-f", "-c", _ZSH], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SITE": str(site)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "registered _dispenserctl"
    assert "completion:print the shell completion script (bash, zsh)" in lines
    assert any(line.startswith("top:live view") for line in lines)
    assert any(line.startswith("--state[") and "(received held queued" in line
               for line in lines), done.stdout
    assert any(line.startswith("--token-file[") and line.endswith(":_files")
               for line in lines), done.stdout
