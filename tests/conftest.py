"""Shared fixtures: where the repository and the shipped sample book are, and scratch copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The shipped sample book folder, ``data/sample/`` (read only: copy it to change it)."""
    return SAMPLE_DIR


@pytest.fixture
def book_copy(tmp_path: Path) -> Path:
    """A fresh copy of the sample book folder (with its day and orders) to break at will."""
    return Path(shutil.copytree(SAMPLE_DIR, tmp_path / "book"))
