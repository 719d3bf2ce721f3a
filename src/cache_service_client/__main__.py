"""The ``devcache`` command (or ``python -m cache_service_client``); see docs/cli.md.

Commands: ``get``, ``put``, ``delete``, ``list``, ``query``, ``count``, ``info``, ``health``,
``export``, ``import``, ``repair``, ``demo`` and ``serve``.
"""

from __future__ import annotations

import sys

from cache_service_client._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
