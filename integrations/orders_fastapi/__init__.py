"""Orders API: a FastAPI service guarded by the ASGI adapter."""
