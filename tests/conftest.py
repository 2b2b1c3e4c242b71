"""Fixtures every test may use: the real annotation files (skipped when absent, failing under CI),
tiny dataset folders, and an isolated cache with small generated data for the whole session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import (
    REAL_ANNOTATIONS,
    build_cirr,
    build_fashioniq,
    remember_full_sizes,
    shared_or_skip,
    shrink_shapes,
)


@pytest.fixture(scope="session")
def real_annotations() -> Path:
    """``../shared/data/annotations`` (FashionIQ + CIRR annotation files, no images)."""
    shared_or_skip(REAL_ANNOTATIONS / "fashioniq")
    shared_or_skip(REAL_ANNOTATIONS / "cirr")
    return REAL_ANNOTATIONS


@pytest.fixture
def make_fashioniq(tmp_path):
    """``make_fashioniq(**kwargs)`` -> root of a tiny FashionIQ in tmp_path (see ``build_fashioniq``)."""
    return lambda root=None, **kw: build_fashioniq(Path(root or tmp_path / "fashioniq"), **kw)


@pytest.fixture
def make_cirr(tmp_path):
    """``make_cirr(layout='flat', **kwargs)`` -> root of a tiny CIRR in tmp_path (see ``build_cirr``)."""
    return lambda root=None, **kw: build_cirr(Path(root or tmp_path / "cirr_data"), **kw)


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Every test runs with its own CIRBENCH_CACHE and small shapes datasets: nothing touches
    ~/.cache, and nothing generates the full-size benchmark."""
    from cirbench.data import shapes

    cache = tmp_path_factory.mktemp("cirbench-cache")
    old_env = os.environ.get("CIRBENCH_CACHE")
    old_sizes = remember_full_sizes()
    os.environ["CIRBENCH_CACHE"] = str(cache)
    shrink_shapes()
    yield cache
    for k, v in old_sizes.items():
        setattr(shapes, k, v)
    if old_env is None:
        os.environ.pop("CIRBENCH_CACHE", None)
    else:
        os.environ["CIRBENCH_CACHE"] = old_env
