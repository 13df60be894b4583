"""The ``users`` app: accounts kept in the registry."""
