"""Fixtures of tests/deploy (helpers in tests/deploy/_helm.py)."""

from __future__ import annotations

import pytest

from tests.deploy._helm import Tools, install_tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm, kubeconform and the offline schemas, installed (or found cached) by chart.sh."""
    return install_tools()
