"""Orders API: every route declares what it needs, and the middleware checks it.

``create_app`` takes the zero trust settings, so the caller (``zt demo``, the
end-to-end tests) injects the issuer, audience and JWKS URL, then serves the
app, e.g. with ``uvicorn.run(create_app(settings))``.
"""

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from pydantic import BaseModel, Field

from zt_middleware import public, requires
from zt_middleware.adapters.asgi import ZeroTrustMiddleware

router = APIRouter()


class NewOrder(BaseModel):
    sku: str = Field(min_length=1, max_length=32)
    quantity: int = Field(gt=0, le=1000)


class Order(NewOrder):
    id: str
    status: str
    created_by: str


SEED_ORDERS = (
    # id, sku, quantity, status, created_by
    ("ord-1001", "KB-104", 2, "shipped", "alice"),
    ("ord-1002", "MS-220", 1, "packing", "bob"),
    ("ord-1003", "HD-512", 5, "new", "alice"),
)


def seed_orders() -> dict[str, Order]:
    fields = ("id", "sku", "quantity", "status", "created_by")
    orders = (Order(**dict(zip(fields, row, strict=True))) for row in SEED_ORDERS)

    return {order.id: order for order in orders}


def orders_of(request: Request) -> dict[str, Order]:
    orders: dict[str, Order] = request.app.state.orders
    return orders


@router.get("/healthz")
@public
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/orders")
@requires("orders:read")
async def list_orders(request: Request) -> dict[str, Any]:
    orders = list(orders_of(request).values())

    return {"orders": orders, "seen_by": request.state.principal.subject}


@router.get("/api/orders/{order_id}")
@requires("orders:read")
async def get_order(order_id: str, request: Request) -> dict[str, Any]:
    order = orders_of(request).get(order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")

    return {"order": order, "seen_by": request.state.principal.subject}


@router.post("/api/orders", status_code=status.HTTP_201_CREATED)
@requires("orders:write", deny_at=80)  # a sensitive route: stricter on risk
async def create_order(new: NewOrder, request: Request) -> Order:
    orders = orders_of(request)
    order_id = f"ord-{1001 + len(orders)}"
    order = Order(
        id=order_id,
        status="new",
        created_by=request.state.principal.subject,
        **new.model_dump(),
    )
    orders[order_id] = order

    return order


@router.get("/admin")
@requires("orders:admin")
async def admin(request: Request) -> dict[str, Any]:
    return {
        "service": "orders",
        "orders": len(orders_of(request)),
        "seen_by": request.state.principal.subject,
    }


@router.get("/admin/stats")
@requires("orders:admin")
async def admin_stats(request: Request) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for order in orders_of(request).values():
        by_status[order.status] = by_status.get(order.status, 0) + 1

    return {"by_status": by_status, "seen_by": request.state.principal.subject}


# Deliberately unannotated: default deny refuses it to every caller, whatever
# scopes the token carries.
@router.get("/api/internal/reindex")
async def reindex(request: Request) -> dict[str, int]:
    return {"reindexed": len(orders_of(request))}


def create_app(zt_settings: Mapping[str, Any]) -> FastAPI:
    """Build the orders API guarded by the given zero trust settings."""
    # The generated docs would be unannotated routes, refused by default deny;
    # this service does not serve them.
    app = FastAPI(title="Orders", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.orders = seed_orders()
    app.include_router(router)
    app.add_middleware(ZeroTrustMiddleware, settings=zt_settings)

    return app
