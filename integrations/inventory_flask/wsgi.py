"""WSGI entry point, e.g. ``waitress-serve integrations.inventory_flask.wsgi:app``.

The zero trust settings come from ``ZT_SETTINGS_JSON``, a JSON object.
"""

import json
import os
from typing import Any

from .app import create_app


def settings_from_env() -> dict[str, Any]:
    raw = os.environ.get("ZT_SETTINGS_JSON")
    if not raw:
        raise RuntimeError("ZT_SETTINGS_JSON is not set; it must hold a JSON object")

    settings = json.loads(raw)
    if not isinstance(settings, dict):
        raise RuntimeError(
            f"ZT_SETTINGS_JSON must hold a JSON object, got {type(settings).__name__}"
        )

    return settings


app = create_app(settings_from_env())
