"""The package's layering: every ``kgexp`` import points to the importer's own package or a lower layer,
and the domain packages import neither Hydra nor OmegaConf (read from the source, imports inside
functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kgexp"

#: Top to bottom. A module may import its own package and anything in a later layer, nothing else.
LAYERS = [
    {"__main__"},
    {"cli"},
    {"commands"},
    {"config"},
    {"analysis"},
    {"training"},
    {"evaluation", "mi"},
    {"data", "models"},
    {"runtime"},
    {"kernels", "sides", "options", "__init__"},
    {"errors"},
]
DOMAIN = {
    "analysis",
    "training",
    "evaluation",
    "mi",
    "data",
    "models",
    "kernels",
    "sides",
    "options",
    "errors",
}


def unit_of(module: str) -> str:
    """``kgexp.training.emu`` -> ``training``; ``kgexp`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file; ``from kgexp import x`` gives
    ``kgexp.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kgexp":
                found += [(node.lineno, f"kgexp.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_every_module_is_in_a_layer():
    units = {unit_of(module_name(path)) for path in SOURCES}
    assert units == set().union(*LAYERS)


def upward_imports(path: Path, src: Path = SRC) -> list[str]:
    """``file:line: module`` of each kgexp import of a higher layer or of another unit of the same one."""
    own = unit_of(module_name(path, src))
    return [
        f"{path.relative_to(src)}:{line}: {target}"
        for line, target in imports_of(path)
        if target.startswith("kgexp.") or target == "kgexp"
        if unit_of(target) != own and layer_of(unit_of(target)) <= layer_of(own)
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_downwards(path):
    assert not upward_imports(path), "imports of a higher or the same layer"


DOMAIN_SOURCES = [path for path in SOURCES if unit_of(module_name(path)) in DOMAIN]


@pytest.mark.parametrize("path", DOMAIN_SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_domain_packages_know_nothing_of_hydra(path):
    found = [target for _, target in imports_of(path) if target.split(".")[0] in ("hydra", "omegaconf")]
    assert not found


def test_the_checker_sees_upward_and_sideways_imports(tmp_path):
    """The rule on a file written by hand: a model importing the builder (upward) and the data package
    (the same layer) is caught on both lines; its own package and the kernels are not."""
    path = tmp_path / "kgexp" / "models" / "bad.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "from kgexp.models.base import KGEModel\n"
        "def f():\n"
        "    from kgexp.config.build import build_module\n"
        "    from kgexp import data, kernels\n"
    )
    assert upward_imports(path, tmp_path / "kgexp") == [
        "models/bad.py:3: kgexp.config.build",
        "models/bad.py:4: kgexp.data",
    ]
