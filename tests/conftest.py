"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture
def toy(tmp_path):
    """The toy exported model of test_runtime_toymodel, in a fresh folder (modules that
    need one model for all their tests define their own, module-scoped)."""
    from test_runtime_toymodel import build_toy_model

    return build_toy_model(tmp_path / "toy")
