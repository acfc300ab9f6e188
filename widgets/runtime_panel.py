"""RuntimePanel: which runtime the current variant is built for and measured in.

The options are the engine's registered runtimes (``workbench.runtimes.list_runtimes``),
whatever they are. What a runtime cannot do is the engine's to say: the panel asks
``workbench.pipeline.check_applicable`` for the current recipe in every runtime, and
for each quantization scheme in the chosen one, and shows the reasons it gives (the
dropdown marks a runtime that cannot measure the current recipe). No rule about a
runtime lives here.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import traitlets as T

from workbench.errors import WorkbenchError
from workbench.pipeline import check_applicable
from workbench.recipe import QUANT_SCHEMES, QuantizeConfig, Recipe
from workbench.runtimes import DEFAULT_RUNTIME, list_runtimes

__all__ = ["RuntimePanel", "recipe_refusal", "scheme_refusals"]


def recipe_refusal(model: Any, recipe: Recipe | None, runtime: str) -> str:
    """Why ``runtime`` cannot measure ``recipe`` on ``model`` (the engine's words), or ""."""
    if model is None or recipe is None:
        return ""
    try:
        check_applicable(model, recipe, runtime)
    except WorkbenchError as exc:
        return str(exc)
    return ""


def scheme_refusals(model: Any, runtime: str) -> dict[str, str]:
    """Quantization scheme -> why ``runtime`` cannot apply it to ``model``, for the schemes
    it cannot (as the engine says; schemes it can are left out)."""
    if model is None:
        return {}
    out = {}
    for scheme in QUANT_SCHEMES:
        why = recipe_refusal(model, Recipe.of(None, QuantizeConfig(scheme=scheme)), runtime)
        if why:
            out[scheme] = why
    return out


class RuntimePanel(W.VBox):
    """A runtime dropdown, with what the chosen runtime cannot do for the current recipe.

    Traits:
        runtime: the chosen runtime's registry name (default ``DEFAULT_RUNTIME``).
        options: (read-only) the registered runtimes offered.
        model, recipe: what the explanations are about (set by the app).
        refusals: (read-only) runtime -> why it cannot measure ``recipe`` on ``model``,
            for the runtimes that cannot.
        scheme_refusals: (read-only) quantization scheme -> why the chosen runtime
            cannot apply it, for the schemes it cannot.
    """

    runtime = T.Unicode(DEFAULT_RUNTIME)
    options = T.Tuple(read_only=True)
    model = T.Any(None)
    recipe = T.Any(None)
    refusals = T.Dict(read_only=True)
    scheme_refusals = T.Dict(read_only=True)

    def __init__(self, **kwargs) -> None:
        self.set_trait("options", tuple(list_runtimes()))
        self.runtime_w = W.Dropdown(
            options=[(name, name) for name in self.options],
            description="runtime",
            tooltip="the runtime the variant is built for and measured in",
        )
        self._note_w = W.HTML()
        self._relabelling = False  # the dropdown's options are being replaced
        super().__init__(children=[self.runtime_w, self._note_w], **kwargs)
        if self.runtime not in self.options:
            raise WorkbenchError(
                f"unknown runtime {self.runtime!r}", f"use one of: {', '.join(self.options)}"
            )
        self.runtime_w.value = self.runtime
        self.runtime_w.observe(self._on_dropdown, names="value")
        self.refresh()

    @T.validate("runtime")
    def _known(self, proposal: dict) -> str:
        if proposal["value"] not in self.options:
            raise T.TraitError(
                f"unknown runtime {proposal['value']!r}: use one of {', '.join(self.options)}"
            )
        return proposal["value"]

    def _on_dropdown(self, change: dict) -> None:
        # Replacing the options moves the value for a moment: not a choice.
        if not self._relabelling and change["new"] is not None:
            self.runtime = change["new"]

    @T.observe("runtime", "model", "recipe")
    def _on_change(self, change: dict) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Ask the engine again what each runtime can do for the current recipe."""
        refusals = {
            rt: why for rt in self.options if (why := recipe_refusal(self.model, self.recipe, rt))
        }
        schemes = scheme_refusals(self.model, self.runtime)
        with self.hold_trait_notifications():
            self.set_trait("refusals", refusals)
            self.set_trait("scheme_refusals", schemes)
        # The dropdown marks the runtimes that cannot measure the current recipe.
        labels = [
            (f"{rt} (cannot measure this recipe)" if rt in refusals else rt, rt)
            for rt in self.options
        ]
        self._relabelling = True
        try:
            if list(self.runtime_w.options) != labels:
                self.runtime_w.options = labels
            self.runtime_w.value = self.runtime
        finally:
            self._relabelling = False
        lines = []
        if self.runtime in refusals:
            lines.append(
                f'<div style="color:#b00020">{html.escape(self.runtime)} cannot measure this '
                f"recipe: {html.escape(refusals[self.runtime])}</div>"
            )
        if schemes:
            items = "".join(
                f"<li><b>{html.escape(s)}</b>: {html.escape(why)}</li>"
                for s, why in schemes.items()
            )
            lines.append(
                f'<div style="color:#555">Not available in {html.escape(self.runtime)}:'
                f'<ul style="margin: 2px 0; padding-left: 18px;">{items}</ul></div>'
            )
        self._note_w.value = "".join(lines)
