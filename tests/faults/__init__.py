"""Fault injection against real processes: crashes, slow links, pauses, server-side errors, and
the gateway under load. Each test prints the figures docs/reliability.md quotes (run pytest with
``-s`` to see them); CI runs the whole folder with the rest of the suite."""
