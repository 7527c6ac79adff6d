"""Benchmarks: each compares against plain Celery on the same machine, in the same run.

Not part of ``make test``. Run one with ``python -m bench.<name>``; see
docs/benchmarks.md for the commands and the figures.
"""
