"""Inventory service: a Flask application guarded by the Flask extension."""
