"""Actions on a model or one of its copies, shared by Placement and the pod view: unload a
copy from its pod (after a confirmation), load a copy on a chosen pod, pin / unpin, and the
copies policy (min / max copies). Each runs in a thread worker through ``plane.api``; an
error reaches the app's worker handler and is shown, never swallowed. With ``--readonly``
the keys are hidden and refused, and the workers refuse again.
"""

from __future__ import annotations

from typing import Any

from textual import work

from console.screens.base import ViewScreen
from console.screens.dialogs import ConfirmScreen, FormField, FormScreen
from plane.registry import ModelRecord

__all__ = ["CopyActionsView", "COPY_ACTIONS", "LoadFailed", "parse_copies"]

COPY_ACTIONS = ("unload_copy", "load_here", "toggle_pin", "copies_policy")


class LoadFailed(RuntimeError):
    """The pod was asked to load a copy and has none afterwards."""


def parse_copies(text: str, name: str) -> int:
    """A copies count from a form field: a whole number, 0 or more (empty is 0)."""
    text = (text or "").strip()
    try:
        value = int(text or 0)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be 0 or more")
    return value


class CopyActionsView(ViewScreen):
    """A view whose cursor designates a model and maybe one of its pods (a copy, or a pod
    without a copy to load one on). Subclasses implement :meth:`selected_copy`."""

    def selected_copy(self) -> tuple[str | None, str | None]:
        """(model id, pod id) under the cursor; either may be None."""
        return None, None

    def selected_model(self) -> ModelRecord | None:
        model_id, _pod = self.selected_copy()
        return self.plane.models.get(model_id) if model_id else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if allowed and action in COPY_ACTIONS and self.is_mounted:
            return self.selected_model() is not None or None
        return allowed

    # -- unload ------------------------------------------------------------------------------------

    def action_unload_copy(self) -> None:
        if not self.writable():
            return
        model_id, pod = self.selected_copy()
        m = self.plane.models.get(model_id) if model_id else None
        if m is None or pod is None:
            self.notify("put the cursor on a copy (a model's cell under a pod)", severity="warning")
            return
        if pod not in m.copies:
            self.notify(f"{pod} holds no copy of {m.model_id}", severity="warning")
            return
        others = [p for p in m.copies if p != pod]
        after = (f" It stays loaded on {', '.join(sorted(others))}." if others
                 else " It will have no copy left (the next request loads it again).")
        if m.min_copies > len(others):
            after += f" Its policy wants {m.min_copies} copies: the plane may load it again."

        def answer(yes: bool | None) -> None:
            if yes:
                self.unload(m.model_id, pod)

        self.app.push_screen(ConfirmScreen(f"Unload the copy of {m.model_id} from {pod}?{after}",
                                           confirm_label="Unload"), answer)

    @work(thread=True, exclusive=False, exit_on_error=False, name="unload copy")
    def unload(self, model_id: str, pod: str) -> None:
        self.require_writable()
        if self.client_or_raise().unload_copy(model_id, pod):
            self.app.call_from_thread(self.notify, f"unloaded {model_id} from {pod}")
        else:
            self.app.call_from_thread(self.notify, f"{pod} held no copy of {model_id}", severity="warning")

    # -- load on a pod -----------------------------------------------------------------------------

    def action_load_here(self) -> None:
        if not self.writable():
            return
        model_id, pod = self.selected_copy()
        m = self.plane.models.get(model_id) if model_id else None
        if m is None or pod is None:
            self.notify("put the cursor on a pod's column to load the model there", severity="warning")
            return
        if pod in m.copies:
            self.notify(f"{pod} already holds {m.model_id} ({m.copies[pod].state})", severity="warning")
            return
        self.notify(f"loading {m.model_id} on {pod}…")
        self.load_on(m.model_id, pod)

    @work(thread=True, exclusive=False, exit_on_error=False, name="load copy")
    def load_on(self, model_id: str, pod: str) -> None:
        self.require_writable()
        rec = self.client_or_raise().load_on(model_id, pod)
        copy = rec.copies.get(pod)
        if copy is None:  # the pod answered but holds no copy: say why (its failure), never "done"
            failure = rec.failed.get(pod)
            why = failure.message if failure else "no copy after the load"
            raise LoadFailed(f"{pod} did not load {model_id}: {why}")
        self.app.call_from_thread(self.notify, f"{model_id} on {pod}: {copy.state}")

    # -- policy ------------------------------------------------------------------------------------

    def action_toggle_pin(self) -> None:
        if not self.writable():
            return
        m = self.selected_model()
        if m is not None:
            self.set_policy(m.model_id, pinned=not m.pinned)

    def action_copies_policy(self) -> None:
        if not self.writable():
            return
        m = self.selected_model()
        if m is None:
            return
        fields = [
            FormField("min_copies", "minimum copies (kept loaded even when idle)", value=str(m.min_copies)),
            FormField("max_copies", "maximum copies (0: no cap)", value=str(m.max_copies)),
            FormField("pinned", "pinned (never evicted)", kind="checkbox", value=m.pinned),
        ]
        model_id = m.model_id

        def submit(values: dict[str, Any]) -> str:
            self.require_writable()
            low = parse_copies(values.get("min_copies") or "", "minimum copies")
            high = parse_copies(values.get("max_copies") or "", "maximum copies")
            if high and low > high:
                raise ValueError(f"minimum copies ({low}) is above the maximum ({high})")
            rec = self.client_or_raise().set_model_policy(model_id, pinned=bool(values.get("pinned")),
                                                          min_copies=low, max_copies=high)
            return policy_text(rec)

        self.app.push_screen(FormScreen(f"Copies of {model_id}", fields, submit), self._policy_done)

    def _policy_done(self, message: str | None) -> None:
        if message:
            self.notify(message)

    @work(thread=True, exclusive=False, exit_on_error=False, name="model policy")
    def set_policy(self, model_id: str, *, pinned: bool | None = None) -> None:
        self.require_writable()
        rec = self.client_or_raise().set_model_policy(model_id, pinned=pinned)
        self.app.call_from_thread(self.notify, policy_text(rec))


def policy_text(m: ModelRecord) -> str:
    cap = m.max_copies or "no cap"
    return f"{m.model_id}: {'pinned' if m.pinned else 'not pinned'}, copies min {m.min_copies}, max {cap}"
