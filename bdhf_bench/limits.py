"""Bounds on what a user may give, shared by the command line and the runner (no imports, so
the command line can check its options without loading torch)."""

MAX_SEED = 2**32 - 1
"""Seeds are 0 .. 2**32 - 1, the range of numpy's seeds (which DeepOBS's runner uses)."""
