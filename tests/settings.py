"""What the cache-key property tests share: another value of the same kind for a setting read from a
signature or a dataclass (never from a hand list of names)."""

from __future__ import annotations


def another_value(value, special: dict | None = None, name: str = ""):
    """A different value of the same kind as ``value``: ``special[name]`` when given, else a flipped bool,
    ``n + 1``, a float moved by 0.05 (halved from 0.9 up, so a fraction stays a fraction), a changed string,
    another source list for None or a list; an AssertionError for a kind not handled (extend this helper)."""
    if special and name in special:
        return special[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.05 if value < 0.9 else value / 2
    if isinstance(value, str):
        return value + " changed"
    if value is None or isinstance(value, list):
        return ["ffhq", "sd21"] if value != ["ffhq", "sd21"] else None
    raise AssertionError(f"no other value for {name}={value!r}: extend tests/settings.py")
