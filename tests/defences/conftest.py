"""Fixtures of the defences tests; helpers live in defences_helpers.py."""

from __future__ import annotations

import pytest
from defences_helpers import FASHION

from vicious.data import DatasetInfo


@pytest.fixture(scope="session")
def fashion_info() -> DatasetInfo:
    return FASHION
