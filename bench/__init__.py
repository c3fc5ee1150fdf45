"""Load benchmarks; ``python -m bench`` (``make bench``) runs them all."""
