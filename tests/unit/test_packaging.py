"""Package metadata: every third-party import is declared, one version, the license and type marker ship."""

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest

import dmpo_trl


ROOT = Path(__file__).resolve().parents[2]
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")


def requirement_names(text: str) -> set[str]:
    names = (re.split(r"[<>=!~;\[ ]", line.strip())[0] for line in text.splitlines())
    return {name.lower().replace("_", "-") for name in names if name and not name.startswith("%")}


def imported_top_levels(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"dmpo_trl", "__future__"}


@pytest.mark.slow
def test_every_imported_package_is_declared():
    # install_requires, or the extra of an optional feature whose module imports it lazily (classic: Cornac)
    declared = requirement_names(SETUP["options"]["install_requires"])
    declared |= requirement_names(SETUP["options.extras_require"]["classic"])
    distributions = packages_distributions()
    for module in sorted(imported_top_levels(ROOT / "dmpo_trl")):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert names & declared, f"dmpo_trl imports {module!r} but setup.cfg install_requires lacks {sorted(names)}"


def test_examples_extra_covers_the_notebooks():
    declared = requirement_names(SETUP["options"]["install_requires"]) | requirement_names(
        SETUP["options.extras_require"]["examples"]
    )
    distributions = packages_distributions()
    for module in sorted(imported_top_levels(ROOT / "examples")):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert names & declared, f"the examples import {module!r}: add {sorted(names)} to the examples extra"


def test_one_version_license_and_type_marker():
    assert SETUP["metadata"]["version"] == "attr: dmpo_trl.version.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", dmpo_trl.__version__)
    assert dmpo_trl.__version__ == version("dmpo-trl")  # the installed metadata reads the same attribute
    assert SETUP["metadata"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "dmpo_trl" / "py.typed").is_file() and "py.typed" in SETUP["options.package_data"]["dmpo_trl"]
    assert "2405.16127" in (ROOT / "CITATION.cff").read_text()
