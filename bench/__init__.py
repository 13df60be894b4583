"""Benchmarks of zt-middleware; ``python bench/run.py`` runs them all.

Rules for this folder: nothing here is imported by the library or its tests;
servers bind 127.0.0.1 only and are stopped by their own PID; every load loop
is bounded by a duration and a request count.
"""
