"""Published test vectors as data (see README.md here for their sources and statuses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> Any:
    """The parsed JSON file ``name`` (with or without ``.json``) from tests/vectors/."""
    filename = name if name.endswith(".json") else f"{name}.json"
    return json.loads((HERE / filename).read_text(encoding="utf-8"))
