"""``python -m cache_service_client.server``: run the REST gateway (see :mod:`.cli`)."""

import sys

from cache_service_client.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
