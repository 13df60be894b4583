"""ASGI entry point, e.g.
``uvicorn --factory integrations.orders_fastapi.asgi:app_from_env``.

The zero trust settings come from ``ZT_SETTINGS_JSON``, a JSON object. A
factory rather than a module-level app, so that importing this module needs
no environment.
"""

import json
import os
from typing import Any

from fastapi import FastAPI

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


def app_from_env() -> FastAPI:
    """The orders API guarded by the settings in ``ZT_SETTINGS_JSON``."""
    return create_app(settings_from_env())
