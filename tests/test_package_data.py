"""Data files the package reads at run time are declared as package data, so an installed (not
editable) package has them too."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_data_file_of_the_package_is_declared():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "synehrgy_assets"
    data = [p.relative_to(package).as_posix() for p in (package / "core" / "data").rglob("*") if p.is_file()]
    assert data, "no data files found: the test would prove nothing"
    missing = [f for f in data if not any(fnmatch.fnmatch(f, g) for g in declared.get("synehrgy_assets", []))]
    assert missing == [], f"pyproject.toml [tool.setuptools.package-data] misses {missing}"


def test_the_builtin_icd_codes_load_as_text_in_file_order():
    from synehrgy_assets.core import mimic_dictionaries as md

    assert md.BUILTIN_DIAGNOSES[:2] == ["0380", "03811"]  # leading zeros kept
    assert len(md.BUILTIN_DIAGNOSES) == len(md._DIAG_TITLES) and len(md.BUILTIN_PROCEDURES) == len(md._PROC_TITLES)
    assert len(set(md.BUILTIN_DIAGNOSES)) == len(md.BUILTIN_DIAGNOSES)
