"""Third-party registry entries through Python entry points, and close-match suggestions."""

from __future__ import annotations

import difflib
import importlib.metadata
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def load_entry_points(group: str, kind: type[T]) -> list[T]:
    """Every ``kind`` object that installed packages declare under entry-point ``group``.

    An entry point may load to a ``kind``, a list of them, or a zero-argument callable returning
    either. A broken plugin is skipped with a warning: it must not take the built-ins down.
    """
    found: list[T] = []
    for ep in importlib.metadata.entry_points(group=group):
        try:
            obj: Any = ep.load()
            if callable(obj) and not isinstance(obj, kind):
                obj = obj()
            items = obj if isinstance(obj, (list, tuple)) else [obj]
            for item in items:
                if not isinstance(item, kind):
                    raise TypeError(f"expected {kind.__name__}, got {type(item).__name__}")
                found.append(item)
        except Exception as exc:  # a plugin's failure is reported, never fatal
            warnings.warn(f"skipping {group} entry point {ep.name!r}: {exc}", stacklevel=2)
    return found


def skip_taken_name(group: str, name: str) -> None:
    """Warn (one line) that a plugin's entry was skipped because its name is taken: a plugin
    must not silently lose to a built-in, nor replace one."""
    warnings.warn(
        f"skipping the {group} plugin entry {name!r}: that name is already registered "
        "(a built-in or another plugin); give the plugin's entry another name",
        stacklevel=3,
    )


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """One line: the unknown name, the closest valid ones, and all valid ones."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}"
