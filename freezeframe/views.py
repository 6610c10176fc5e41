"""How augmented views live in a feature set, for the extraction that writes them and the datasets that read them.

View 0 is the plain frame (exact preprocessing) and keeps the plain array names (`embed`, `tokens/11`); augmented
view v = 1..V of array A is its own array `views/<v>/<A>`, row for row beside A, so every reader of plain arrays
is unchanged and a training read of one view touches that view's bytes only.
"""

from __future__ import annotations

from freezeframe.errors import StoreError

VIEWS_GROUP = "views"


def view_array(view: int, array: str) -> str:
    """The stored name of `array` in view `view` (0: the plain view)."""
    return array if view == 0 else f"{VIEWS_GROUP}/{view}/{array}"


def augmented_views(provenance: dict) -> int:
    """Augmented views stored per frame by a feature set (0: none), from its provenance (data to check)."""
    augment = provenance.get("augment") or {}
    views = augment.get("views", 0) if isinstance(augment, dict) else None
    if not isinstance(views, int) or isinstance(views, bool) or views < 0:
        raise StoreError(f"the feature set's provenance has a malformed augment record ({augment!r:.80}): it was "
                         "not written by freezeframe extract.")
    return views
