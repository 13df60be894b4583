"""Inventory service: a Flask application factory with one blueprint.

``create_app`` takes the zero trust settings and hands them to the extension
through ``app.config["ZERO_TRUST"]``; ``wsgi.py`` builds the app for servers.
"""

import threading
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, current_app, g, request

from zt_middleware import public, requires
from zt_middleware.adapters.flask import ZeroTrust

bp = Blueprint("inventory", __name__)


class OutOfStockError(Exception):
    """Fewer units are in stock than a reservation asks for."""


class Inventory:
    """Stock levels by SKU; safe to share between the server's threads."""

    def __init__(self, seed: Mapping[str, tuple[str, int]]) -> None:
        self._items = {
            sku: {"name": name, "stock": stock} for sku, (name, stock) in seed.items()
        }
        self._lock = threading.Lock()

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"sku": sku, **item} for sku, item in self._items.items()]

    def get(self, sku: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(sku)
            return None if item is None else {"sku": sku, **item}

    def reserve(self, sku: str, quantity: int) -> int:
        """Take ``quantity`` off the stock of ``sku`` and return what is left.

        Raises KeyError for an unknown SKU and OutOfStockError when the stock
        is short.
        """
        with self._lock:
            item = self._items[sku]
            if item["stock"] < quantity:
                raise OutOfStockError(sku)
            item["stock"] -= quantity
            return int(item["stock"])


SEED_STOCK = {
    "KB-104": ("Mechanical keyboard", 40),
    "MS-220": ("Wireless mouse", 120),
    "HD-512": ("512 GB SSD", 3),
}


def inventory() -> Inventory:
    store: Inventory = current_app.extensions["inventory"]
    return store


@bp.get("/healthz")
@public
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/api/items")
@requires("inventory:read")
def list_items() -> dict[str, Any]:
    return {"items": inventory().all(), "seen_by": g.principal.subject}


@bp.get("/api/items/<sku>")
@requires("inventory:read")
def get_item(sku: str) -> Any:
    item = inventory().get(sku)
    if item is None:
        return {"error": "not_found", "sku": sku}, 404

    return {"item": item, "seen_by": g.principal.subject}


@bp.post("/api/items/<sku>/reserve")
@requires("inventory:write")
def reserve_item(sku: str) -> Any:
    body = request.get_json(silent=True) or {}
    quantity = body.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        return {"error": "invalid_quantity"}, 400

    try:
        left = inventory().reserve(sku, quantity)
    except KeyError:
        return {"error": "not_found", "sku": sku}, 404
    except OutOfStockError:
        return {"error": "insufficient_stock", "sku": sku}, 409

    return {
        "sku": sku,
        "reserved": quantity,
        "stock": left,
        "reserved_by": g.principal.subject,
    }


@bp.get("/admin")
@requires("inventory:admin")
def admin() -> dict[str, Any]:
    items = inventory().all()

    return {
        "service": "inventory",
        "skus": len(items),
        "units": sum(item["stock"] for item in items),
        "seen_by": g.principal.subject,
    }


# Deliberately unannotated: default deny refuses it to every caller, whatever
# scopes the token carries.
@bp.get("/api/internal/export")
def export() -> dict[str, Any]:
    return {"items": inventory().all()}


def create_app(zt_settings: Mapping[str, Any]) -> Flask:
    """Build the inventory service guarded by the given zero trust settings."""
    app = Flask(__name__)
    app.config["ZERO_TRUST"] = dict(zt_settings)
    app.extensions["inventory"] = Inventory(SEED_STOCK)

    app.register_blueprint(bp)
    ZeroTrust(app)

    return app
