"""LICENSE and CITATION.cff agree with pyproject.toml (licence, version) and cite the reproduced paper."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent


def test_license_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "LICENSE").read_text()
    assert project["license"] == "MIT"
    assert text.startswith("MIT License") and "DIRBench contributors" in text
    assert "Permission is hereby granted, free of charge" in text


def test_citation_cff() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == project["version"] and cff["license"] == project["license"]
    (paper,) = cff["references"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert paper["title"].startswith("Unsupervised Deformable Image Registration Revisited: ")
    assert paper["title"].split(": ")[1] in readme  # the README names the paper with the same title
    assert [a["family-names"] for a in paper["authors"]] == ["Liu", "Ruan", "Sheng"]
    assert paper["year"] == 2025 and "MIDL 2025" in paper["conference"]["name"]
