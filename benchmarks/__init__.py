"""Benchmarks of cache-service-client against raw redis-py, pydantic and redis-om.

Run ``python -m benchmarks`` (or ``./scripts/bench``); see ``docs/performance.md``.
"""
