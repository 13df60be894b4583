"""Thin adapters: framework request in, guard decision out.

Rules for this folder: an adapter builds a :class:`RequestContext`, calls the
guard, and translates the :class:`Decision` into its framework's response.
It decides nothing itself, and no adapter imports another.
"""
