"""Rules across the fields of one row, checked on the row as it will be stored.

Field rules (types, patterns, shapes) judge each value alone
(L{b2bua.db.validation}); the rules here judge how values fit together,
so they run in the repository's write transaction on the merged row (the
stored row with the update applied).  Each rule returns the bad fields
(name -> message), empty when the row is fine.

  - A trunk that authenticates by source address (C{auth_mode} C{ip} or
    C{both}) needs at least one address in C{allowed_sources}; one that
    authenticates by digest (C{digest} or C{both}) needs the C{account_id}
    whose credentials the PBX uses.

Rules that need other rows (the trunk account's C{kind}) are the
repository's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ROW_RULES", "row_errors", "trunk_errors"]


def trunk_errors(row: Mapping[str, Any]) -> dict[str, str]:
    """What is inconsistent in a trunk row."""
    mode = row.get("auth_mode")
    errors = {}
    if mode in ("ip", "both") and not row.get("allowed_sources"):
        errors["allowed_sources"] = (f"needs at least one address or network when auth_mode "
                                     f"is {mode}")
    if mode in ("digest", "both") and row.get("account_id") is None:
        errors["account_id"] = (f"required when auth_mode is {mode} (the trunk account whose "
                                "credentials the PBX uses)")
    return errors


#: Entity name -> the rule of its rows.
ROW_RULES: dict[str, Callable[[Mapping[str, Any]], dict[str, str]]] = {
    "trunk": trunk_errors,
}


def row_errors(entity_name: str, row: Mapping[str, Any]) -> dict[str, str]:
    """The bad fields of C{row}, a whole row of C{entity_name} (none: empty)."""
    rule = ROW_RULES.get(entity_name)
    return {} if rule is None else rule(row)
