"""Fixtures shared by the test folders."""
from __future__ import annotations

import pytest

from biohsic import train as train_module
from biohsic.data import load_task


@pytest.fixture
def small_xor(monkeypatch):
    """Runs in this process train on the first 120 of xor's training samples (fast streaming rules)."""
    small = load_task("xor").first_training_samples(120)
    monkeypatch.setattr(train_module, "load_task", lambda *args, **kwargs: small)
    return small


@pytest.fixture
def graph_cache(tmp_path_factory, monkeypatch):
    """Compiled graphs cached in this session's temporary folder, shared by its tests."""
    monkeypatch.setenv("BIOHSIC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "biohsic-cache"))
