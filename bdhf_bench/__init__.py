"""bdhf-bench: block-diagonal Hessian-free optimization, benchmarked DeepOBS-style."""

__version__ = "0.1.0"
