"""A small web service on the cache, once with FastAPI and once with Litestar.

Both enrich a measurement with its device's metadata (the hot path of the cache's readers) and
serve the metadata itself; ``test_web_service.py`` runs both under their framework's test
client against the in-memory backend.
"""
