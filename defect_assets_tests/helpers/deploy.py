"""Every asset and asset check of the code location."""

from __future__ import annotations


def all_assets() -> list:
    """Every asset and asset check of the code location (only the selection runs)."""
    from defect_assets.definitions import build_defs
    from defect_assets.defs.evaluation.checks import champion_checks

    return [*build_defs().assets, *champion_checks]
