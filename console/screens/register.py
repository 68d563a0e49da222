"""The Models view's Register dialog: id, storage, path, type, load now.

The type is a select of the runtimes (onnx, sklearn, xgboost, lightgbm), or ``other`` with a
text field for ModelMesh's spellings (``mt:sklearn:1``, ``rt:mlserver-1.x``). Typing a path
whose suffix only one runtime reads (``.joblib``) switches the select to that runtime, unless
the type chosen reads the path already; a directory, or a suffix two runtimes read (``.bst``),
keeps the choice. Before anything is registered the path is checked against the type by
:func:`plane.runtimes.files.check_path_for_type`, the rule the dashboard and the CLI apply,
and the form says why it refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.widgets import Input, Select

from console.screens.dialogs import FormField, FormScreen
from plane.runtimes.files import check_path_for_type
from plane.runtimes.types import RUNTIMES

if TYPE_CHECKING:
    from console.screens.base import ViewScreen

__all__ = ["OTHER", "RegisterForm", "chosen_type", "register_form", "suggested_type"]

OTHER = "other"  # the select's choice for a ModelMesh spelling typed in the next field


def suggested_type(current: str, path: str) -> str | None:
    """The runtime the type select should switch to for ``path``: the one runtime whose files
    end in its suffix, when ``current`` does not read it; None to keep the choice."""
    if not path.strip() or check_path_for_type(current, path) is None:
        return None
    readers = [r for r in RUNTIMES if check_path_for_type(r, path) is None]
    return readers[0] if len(readers) == 1 else None


def chosen_type(values: dict[str, Any]) -> str:
    """The type the form's values name: the select's runtime, or the ModelMesh spelling typed."""
    choice = values.get("type") or RUNTIMES[0]
    return (values.get("type_other") or "").strip() if choice == OTHER else str(choice)


class RegisterForm(FormScreen):
    """The form, with the type following the path as it is typed."""

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "field-path":
            return
        select = self.query_one("#field-type", Select)
        current = chosen_type(self.values())
        if select.value == OTHER and not current:
            current = RUNTIMES[0]
        suggestion = suggested_type(current, event.value)
        if suggestion is not None and select.value != suggestion:
            select.value = suggestion


def register_form(view: ViewScreen) -> RegisterForm:
    """The dialog for ``view`` (the Models view): registers through the view's client."""
    keys = sorted({"default", *view.plane.storage})
    fields = [
        FormField("model_id", "model id", placeholder="e.g. mnist-v1"),
        FormField("storage_key", "storage", kind="select", options=keys,
                  value="default" if "default" in keys else keys[0]),
        FormField("path", "path inside the storage (a file, or a directory)", placeholder="models/mnist.onnx"),
        FormField("type", "type", kind="select", options=[*RUNTIMES, OTHER], value=RUNTIMES[0]),
        FormField("type_other", "ModelMesh type", placeholder="mt:sklearn:1, rt:mlserver-1.x",
                  when=("type", OTHER)),
        FormField("load_now", "load now", kind="checkbox", value=False),
    ]

    def submit(values: dict[str, Any]) -> str:
        view.require_writable()
        model_id = (values.get("model_id") or "").strip()
        path = (values.get("path") or "").strip()
        mtype = chosen_type(values)
        problem = check_path_for_type(mtype, path)
        if problem:
            raise ValueError(problem)
        client = view.client_or_raise()
        try:
            client.register_model(model_id, path=path, storage_key=values.get("storage_key") or "default",
                                  type=mtype, load_now=bool(values.get("load_now")))
        except Exception as exc:
            if values.get("load_now") and client.get_model(model_id) is not None:
                return f"registered {model_id}; loading did not start: {exc}"
            raise
        return f"registered {model_id} ({mtype})"

    return RegisterForm("Register a model", fields, submit, submit_label="Register")
