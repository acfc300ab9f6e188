"""A page that rendered the app gets every widget's state again (widgets.frontend_sync).

The race it closes: the page asks for all states, then opens a channel per widget; an
update sent between the two is dropped, and the app's card stayed "measuring" a baseline
measured long before (the browser test's 1-in-3 failure under load).
"""

from __future__ import annotations

import threading

import ipywidgets as W
import pytest

from widgets.frontend_sync import FrontendSync, resend_tree, widget_tree


def _recording_sends(monkeypatch) -> list[str]:
    """From now on, every widget's send_state records its model id instead of sending."""
    sent: list[str] = []
    monkeypatch.setattr(W.Widget, "send_state", lambda self, key=None: sent.append(self.model_id))
    return sent


def test_widget_tree_walks_children_once():
    leaf = W.HTML("x")
    inner = W.VBox([leaf, leaf])
    tabs = W.Tab(children=[inner, W.Button()])
    root = W.VBox([tabs, inner])
    walked = list(widget_tree(root))
    assert walked[0] is root
    assert len(walked) == len({id(w) for w in walked}) == 5  # root, tabs, inner, leaf, button


def test_a_render_resends_at_once_and_again_after_the_delay(monkeypatch):
    card = W.HTML("measuring...")
    root = W.VBox([card])
    again = threading.Event()

    def resend():
        resend_tree(root)
        if sum(i != probe.model_id for i in sent) >= 4:
            again.set()

    probe = FrontendSync(resend, delay=0.05)
    sent = _recording_sends(monkeypatch)
    tree = [root.model_id, card.model_id]
    probe.rendered += 1  # what the page's script does when it draws the probe
    assert [i for i in sent if i in tree] == tree  # at once
    assert again.wait(5), "the delayed re-send did not come"
    assert [i for i in sent if i in tree] == tree * 2


@pytest.mark.slow
def test_the_app_resends_its_card_and_chart_when_a_page_renders_it(monkeypatch, tmp_path, quick):
    from widgets import Workbench
    from workbench import Cache

    wb = Workbench("digits-cnn", cache=Cache(tmp_path / "cache"), settings=quick)
    assert wb.wait_idle(120)
    probes = [w for w in widget_tree(wb) if isinstance(w, FrontendSync)]
    assert len(probes) == 1 and probes[0].layout.display == "none"
    sent = _recording_sends(monkeypatch)
    probes[0].rendered += 1
    for widget in (wb, wb.card, wb.chart, wb.pruning, wb.tabs):
        assert widget.model_id in sent, widget
