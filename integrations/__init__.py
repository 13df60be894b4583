"""Example services guarded by zt-middleware, one per framework.

The ``zt demo`` command and the end-to-end tests run them under real servers.
They are not part of the wheel; they are used from a checkout.
"""
