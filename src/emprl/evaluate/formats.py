"""How figures are written: the number formats of results.md and the RL study's report.md, and the
JSON-safe copy of a report (results.json, report.json)."""

from __future__ import annotations

import math

DASH = "–"  # a missing figure in the study's report.md
EM_DASH = "—"  # a missing figure in results.md


def number(value, digits: int = 2, missing: str = DASH) -> str:
    """``value`` with ``digits`` decimals; None and NaN as ``missing``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:.{digits}f}"


def interval(d: dict | None, digits: int, key: str = "delta") -> str:
    """Signed ``d[key]`` and its 95% CI, e.g. ``+0.0120 [+0.0040, +0.0200]``."""
    if not d:
        return DASH
    return f"{d[key]:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def interval_p(d: dict | None, digits: int) -> str:
    """:func:`interval` of the difference with its p-value."""
    if not d or "delta" not in d:
        return DASH
    return f"{interval(d, digits)} p={d.get('p_value', float('nan')):.3g}"


def plus_minus(d: dict | None, digits: int = 2, key: str = "delta") -> str:
    """Signed ``d[key]`` ± its Student t half-width ``d['ci95']`` (none when unknown)."""
    if not d:
        return DASH
    half = d.get("ci95")
    return f"{d[key]:+.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def json_safe(value):
    """NaN and inf as null: the JSON files stay standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
