"""``python -m benchmarks``: run the benchmark suite."""

from benchmarks.run import main

main()
