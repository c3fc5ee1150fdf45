"""The docs stay true to the code: every setting documented, every contract procedure served."""

from __future__ import annotations

import re
from pathlib import Path

from server.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _variables_read_by_code() -> set[str]:
    return set(Settings.variables())


def test_every_setting_is_in_the_configuration_reference() -> None:
    documented = set(
        re.findall(r"^\| `([A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text(), re.M)
    )
    variables = _variables_read_by_code()
    assert len(variables) > 30
    assert variables - documented == set()
