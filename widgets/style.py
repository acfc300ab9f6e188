"""Looks shared by the panels, defined once."""

from __future__ import annotations

__all__ = ["LINK_STYLE", "TOGGLE_STYLE"]

# Toggle buttons as wide as their labels: a fixed width cut "unstructured" to
# "unstructu..." in a narrow notebook.
TOGGLE_STYLE = {"button_width": "auto"}
# A download link looks like a link, whatever the page's own styles.
LINK_STYLE = "color: #0b57d0; text-decoration: underline; cursor: pointer; font-weight: bold;"
