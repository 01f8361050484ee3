"""``python -m bdhf_bench`` is ``bdhf-bench``."""

from .cli import main

if __name__ == "__main__":
    main()
