"""The shape of the code: every module imports, and dependencies point one way.

- the core (``dispenser.core``) imports nothing of the daemon, the API, the CLI, the
  drivers or the simulator;
- only the drivers import pymodbus and pyserial;
- nothing imports the simulator (``firmware_sim``) but the demo composition
  (``dispenser.daemon.demo``) and the tests;
- in the daemon, only ``modbus_robot`` imports the robot driver;
- the API and the CLI import nothing of the daemon;
- no module imports another that (at run time) imports it back, directly or not;
- no test module imports another test module, and nothing inserts itself into
  ``sys.path``: what tests, campaigns and benchmarks share is ``dispenser.testing``, which
  nothing of the daemon imports;
- every module of the packages longer than 450 lines says why at its top: a paragraph of
  its docstring starting ``Size:`` (what belongs together there, or what split would be
  natural and why it is not done yet; issue 9).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dispenser", "drivers", "firmware_sim")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]
    return sorted(names)


def _source(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(path: Path, runtime_only: bool) -> Iterator[str]:
    """Modules imported by a file; with ``runtime_only``, not those under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


MODULES = _modules()


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    assert importlib.import_module(module).__name__ == module


def _violations(module: str) -> list[str]:
    found = []
    for name in _imports(_source(module), runtime_only=False):
        top = name.split(".")[0]
        if module.startswith("dispenser.core") and (
                name.startswith(("dispenser.daemon", "dispenser.api", "dispenser.cli"))
                or top in ("drivers", "firmware_sim")):
            found.append(f"the core imports {name}")
        if top in ("pymodbus", "serial") and not module.startswith("drivers"):
            found.append(f"only drivers import {top}: {name}")
        if top == "firmware_sim" and not module.startswith(
                ("firmware_sim", "dispenser.daemon.demo", "dispenser.testing")):
            found.append(f"only the demo composition imports the simulator: {name}")
        if (name.startswith("drivers.robot") and module.startswith("dispenser")
                and module != "dispenser.daemon.modbus_robot"):
            found.append(f"only modbus_robot imports the robot driver: {name}")
        if module.startswith(("dispenser.api", "dispenser.cli")) and name.startswith(
                "dispenser.daemon"):
            found.append(f"the API and the CLI do not import the daemon: {name}")
        if name.startswith("dispenser.testing") and not module.startswith(
                "dispenser.testing"):
            found.append(f"only tests, campaigns and benchmarks use {name}")
        if top in ("tests", "bench"):
            found.append(f"the packages import nothing of {top}: {name}")
    return found


def test_dependencies_point_one_way() -> None:
    problems = {m: v for m in MODULES if (v := _violations(m))}
    assert problems == {}


def test_no_import_cycles() -> None:
    known = set(MODULES)
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        targets = set()
        for name in _imports(_source(module), runtime_only=True):
            # "from package import module" names the module; "from module import name"
            # the module itself.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
        graph[module] = targets
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module)
    assert cycles == []


def test_no_test_imports_another_test_module() -> None:
    problems = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for name in _imports(path, runtime_only=False):
            if name.startswith("tests.") or name == "tests":
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert problems == []


def test_nothing_inserts_itself_into_sys_path() -> None:
    edits = ("sys.path." + "insert", "sys.path." + "append")  # (not this file's own text)
    problems = [str(path.relative_to(ROOT)) for folder in ("tests", "bench", "scripts")
                for path in sorted((ROOT / folder).rglob("*.py"))
                if any(e in path.read_text() for e in edits)]
    assert problems == []


LONG_MODULE_LINES = 450


def _package_files() -> list[Path]:
    """Every module file of the packages, also those of a namespace package that
    ``pkgutil`` does not walk (``dispenser/testing/campaigns``)."""
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _says_why_it_is_long(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text(), str(path))) or ""
    return any(paragraph.lstrip().startswith("Size:") for paragraph in doc.split("\n\n"))


def test_every_long_module_says_why_at_its_top() -> None:
    lacking = [f"{path.relative_to(ROOT)} ({lines} lines)" for path in _package_files()
               if (lines := len(path.read_text().splitlines())) > LONG_MODULE_LINES
               and not _says_why_it_is_long(path)]
    assert lacking == [], (
        f"modules over {LONG_MODULE_LINES} lines without a 'Size:' paragraph in their "
        "docstring (why it is one module of that length, or what split would be natural): "
        + ", ".join(lacking))
