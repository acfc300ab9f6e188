"""Re-send a widget tree's state once a page has rendered it.

A page loading an app asks the kernel for every widget's state in one message, then
opens a channel per widget. An update the kernel sends between the two (a measurement
finishing while the page loads, as the app's first baseline does) reaches no widget in
the page and is dropped: ipywidgets' manager has no queue for it. The page then shows
the state of the moment it asked, for good: in the app, a card still "measuring" a
baseline that was measured long ago.

``FrontendSync`` is an invisible widget placed in the tree. When a page renders it, its
script tells the kernel, which sends the state of every widget in the tree again: the
page is then current whatever it missed while loading. It is sent twice, at once and a
moment later, because the page creates its widgets concurrently and one created after
this probe could still miss the first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import anywidget
import ipywidgets as W
import traitlets as T

__all__ = ["RESEND_DELAY_SECONDS", "FrontendSync", "resend_tree", "widget_tree"]

# The second re-send: after the widgets a page creates beside this one have their channels.
RESEND_DELAY_SECONDS = 2.0


def widget_tree(root: W.Widget) -> Iterator[W.Widget]:
    """``root`` and every widget under it (through ``children``), each once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        yield widget
        stack.extend(
            c for c in reversed(tuple(getattr(widget, "children", ()))) if isinstance(c, W.Widget)
        )


class FrontendSync(anywidget.AnyWidget):
    """Counts the pages that rendered it; ``resend`` runs on each (see the module doc)."""

    # No network, no content: the script is inline and only reports the render.
    _esm = """
    export default {
      render({ model, el }) {
        el.style.display = "none";
        model.set("rendered", model.get("rendered") + 1);
        model.save_changes();
      }
    };
    """
    rendered = T.Int(0).tag(sync=True)

    def __init__(self, resend: Callable[[], None], delay: float = RESEND_DELAY_SECONDS) -> None:
        super().__init__(layout=W.Layout(display="none"))
        self._resend = resend
        self._delay = delay
        self.observe(self._on_rendered, names="rendered")

    def _on_rendered(self, _change: dict) -> None:
        self._resend()
        timer = threading.Timer(self._delay, self._resend)
        timer.daemon = True
        timer.start()


def resend_tree(root: W.Widget) -> int:
    """Send the state of ``root`` and every widget under it again; returns how many."""
    count = 0
    for widget in widget_tree(root):
        if widget.comm is not None:
            widget.send_state()
            count += 1
    return count
