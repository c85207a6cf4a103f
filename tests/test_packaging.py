"""Packaging: every source folder is a listed package, so the wheel and an editable install agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"onnxviz": "onnxviz", "onnxviz.backends": "backends", "onnxviz.templates": "templates"}


def _folder(package: str) -> Path:
    for name, folder in sorted(ALIASES.items(), key=lambda kv: -len(kv[0])):
        if package == name or package.startswith(name + "."):
            return ROOT / folder / Path(*package[len(name) + 1 :].split(".")) if package != name else ROOT / folder
    raise AssertionError(package)


def test_every_python_folder_is_a_listed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == ALIASES
    listed = set(config["packages"])
    found = set()
    for alias, folder in ALIASES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([alias, *rel.parts]) if rel.parts else alias)
    assert found <= listed, f"folders with __init__.py missing from pyproject packages: {sorted(found - listed)}"
    for package in listed:
        assert _folder(package).is_dir(), package
