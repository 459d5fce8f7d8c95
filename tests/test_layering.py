"""No import runs upward: the package layers, read from the source of every module.

The order the code follows (lowest first); a module may import its own package and the
packages of lower layers, never a package of its own layer or above:

    0  sah.errors, sah.figures                    the project's exception types; saving figures
    1  sah.adapters, sah.metrics                  stand alone: import nothing else of sah
    2  sah.models, sah.data, sah.tracking,        independent of each other; sah.report reads
       sah.report                                 sah.metrics, none imports sah.adapters today
    3  sah.tasks (its run driver and one          builds data, module and trainer and runs them
       folder per task)
    4  sah.cli                                    thin entry points over the tasks

So ``cli -> tasks -> (models, data, tracking, report) -> (adapters, metrics) -> errors``.
``sah.adapters`` sits below ``sah.models`` although no model imports it: a model may one day,
an adapter must never know the models. Every import counts, including those inside functions
and under ``TYPE_CHECKING``: a deferred import is still a dependency.

``sah.adapters`` and ``sah.metrics`` also import no training framework (Lightning, Hydra and
its OmegaConf, MLflow), so that either can be taken into another project. The Hydra plugins
in ``hydra_plugins/`` may use the library but not the command line (``sah.cli``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, ...]] = [
    ("sah.errors", "sah.figures"),
    ("sah.adapters", "sah.metrics"),
    ("sah.models", "sah.data", "sah.tracking", "sah.report"),
    ("sah.tasks", "sah.tasks.driver"),
    ("sah.cli",),
]
STANDALONE = ("sah.adapters", "sah.metrics")
FRAMEWORKS = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf", "mlflow")


def module_name(path: Path, root: Path = ROOT) -> str:
    """``sah/data/__init__.py`` -> ``sah.data``; ``sah/data/ct.py`` -> ``sah.data.ct``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``path``, relative ones resolved.

    ``from a.b import c`` yields ``a.b.c`` (``c`` may be a module or a name in ``a.b``; the
    layer of either is that of ``a.b``'s package, except for ``from sah import x``).
    """
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return sorted(found)


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, the LAYERS entry) of the longest entry that is ``module`` or contains it."""
    matches = [
        (len(entry), index, entry)
        for index, entries in enumerate(LAYERS)
        for entry in entries
        if module == entry or module.startswith(entry + ".")
    ]
    return max(matches)[1:] if matches else None


def unit(module: str) -> str:
    """The package a module belongs to for the same-layer rule (``sah.tasks.driver`` is tasks)."""
    found = layer_of(module)
    return "" if found is None else ".".join(found[1].split(".")[:2])


def upward_imports(root: Path = ROOT) -> list[str]:
    """``sah/x/y.py:LINE imports sah.z`` for each import of the same or a higher layer."""
    offences = []
    for path in sorted((root / "sah").rglob("*.py")):
        source = module_name(path, root)
        own = layer_of(source)
        for line, target in imports(path, root):
            if target.split(".")[0] != "sah" or target == "sah.__version__":
                continue
            their = layer_of(target)
            if own is None or their is None or unit(target) == unit(source):
                continue
            if their[0] >= own[0]:
                offences.append(f"{path.relative_to(root)}:{line} imports {target}")
    return offences


def test_no_import_runs_upward():
    offences = upward_imports()
    assert not offences, (
        "these imports run upward or sideways in the layer order at the top of "
        "tests/test_layering.py (move the code down, or change the order there on purpose):\n"
        + "\n".join(offences)
    )


def test_every_package_has_a_layer():
    top = [*(ROOT / "sah").glob("*/__init__.py"), *(ROOT / "sah").glob("*.py")]
    packages = sorted({module_name(p) for p in top} - {"sah"})
    unplaced = [p for p in packages if layer_of(p) is None]
    assert not unplaced, f"add these to LAYERS in tests/test_layering.py: {unplaced}"


@pytest.mark.parametrize("package", STANDALONE)
def test_standalone_packages_import_no_framework_and_nothing_else_of_sah(package):
    folder = ROOT / Path(*package.split("."))
    offences = []
    for path in sorted(folder.rglob("*.py")):
        for line, target in imports(path):
            root_name = target.split(".")[0]
            if root_name in FRAMEWORKS or (root_name == "sah" and unit(target) != package):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not offences, f"{package} must stand alone:\n" + "\n".join(offences)


def test_hydra_plugins_import_nothing_from_the_cli():
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / "hydra_plugins").rglob("*.py"))
        for line, target in imports(path)
        if target == "sah.cli" or target.startswith("sah.cli.")
    ]
    assert not offences, "the Hydra plugins depend on the command line:\n" + "\n".join(offences)


def test_the_checker_finds_upward_relative_and_deferred_imports(tmp_path):
    """The scan itself: an upward import is reported, wherever and however it is written."""
    files = {
        "sah/__init__.py": "",
        "sah/errors.py": "",
        "sah/metrics/__init__.py": "from .aggregate import mean\n",
        "sah/metrics/aggregate.py": "import numpy\n\ndef f():\n    from ..data import ct\n",
        "sah/data/__init__.py": "from sah.errors import DataError\nfrom sah.metrics import f\n",
        "sah/data/ct.py": "from sah import tracking\n",
        "sah/tasks/driver.py": "import sah.tasks.fit\nfrom sah.data import ct\n",
        "sah/tasks/fit.py": "from sah.cli.train import main\n",
        "sah/cli/train.py": "from sah.tasks.driver import run\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert upward_imports(tmp_path) == [
        "sah/data/ct.py:1 imports sah.tracking",
        "sah/metrics/aggregate.py:4 imports sah.data.ct",
        "sah/tasks/fit.py:1 imports sah.cli.train.main",
    ]
