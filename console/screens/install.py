"""Install: start and stop the embedded plane (etcd and runtime pods on this machine), and
install the plane into Kubernetes (render the manifests, apply them, watch the rollout) with
``plane.kube`` — the same functions ``mesh install`` uses. Both report progress into one log.

When a plane runs, the view shows its real settings, not the defaults: the embedded plane's
pods, ports and capacity from ``plane.json`` (:meth:`plane.local.LocalPlane.load`, through
``local.status``), and the capacity and endpoints the pods registered in etcd (the same
records ``PlaneClient.pods()`` returns) for a plane the console is connected to.

``plane.kube`` is imported only when a Kubernetes action runs, so the view opens fast and
works in builds without the kubernetes client.
"""

from __future__ import annotations

import pathlib
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, RichLog, Static

from console import keymaps
from console.messages import InstallFinished, InstallProgress
from console.screens.base import ViewScreen
from console.screens.dialogs import ConfirmScreen, DetailsScreen
from console.screens.install_parts import (
    DEFAULT_PODS,
    KUBE_IMAGE,
    KUBE_NAMESPACE,
    KubeForm,
    describe_local,
    kube_available,
    running_capacity,
)
from plane import local
from plane.settings import format_size, parse_size

__all__ = ["InstallScreen", "describe_local", "kube_available", "KubeForm"]

def _row(label: str, widget: Any) -> Horizontal:
    return Horizontal(Label(label, classes="form-label-inline"), widget, classes="inline-row")


class InstallScreen(ViewScreen):
    VIEW = "install"
    VIEW_TITLE = "Install"
    CSS_PATH = "install.tcss"
    AUTO_FOCUS = ""  # no input grabs the digit keys that switch views
    BINDINGS = keymaps.VIEW_KEYS["install"]

    def __init__(self) -> None:
        super().__init__()
        self.local_plane: local.LocalPlane | None = None
        self.busy = False

    def compose_body(self) -> ComposeResult:
        settings = self.console.settings
        with Horizontal(id="install-top"):
            with Vertical(id="embedded", classes="section"):
                yield Label("Embedded plane (this machine)", classes="section-title")
                yield Static(Text("reading state…", style="dim"), id="local-status")
                with Vertical(id="local-form", classes="install-form"):
                    yield _row("pods", Input(str(DEFAULT_PODS), id="local-pods", type="integer"))
                    yield _row("capacity per pod",
                               Input(format_size(settings.capacity).replace(" ", ""), id="local-capacity"))
                    with Horizontal(classes="install-buttons"):
                        yield Button("Start", id="local-start", variant="success", compact=True)
                        yield Button("Stop", id="local-stop", variant="error", compact=True)
            with Vertical(id="kube", classes="section"):
                yield Label("Kubernetes", classes="section-title")
                yield Static(id="kube-status")
                with Vertical(id="kube-form", classes="install-form"):
                    yield _row("namespace", Input(KUBE_NAMESPACE, id="kube-namespace"))
                    yield _row("pods", Input(str(DEFAULT_PODS), id="kube-pods", type="integer"))
                    yield _row("capacity per pod", Input("256MiB", id="kube-capacity"))
                    yield _row("image", Input(KUBE_IMAGE, id="kube-image"))
                    yield _row("context", Input("", placeholder="(current)", id="kube-context"))
                    yield Checkbox("quickstart (MinIO + demo models)", id="kube-quickstart", compact=True)
                    with Horizontal(classes="install-buttons"):
                        yield Button("Manifests", id="kube-render", compact=True)
                        yield Button("Install", id="kube-install", variant="success", compact=True)
                        yield Button("Uninstall", id="kube-uninstall", variant="error", compact=True)
        yield ProgressBar(total=1, show_eta=False, id="install-progress")
        yield RichLog(id="install-log", max_lines=500, wrap=True, markup=False)

    def on_mount(self) -> None:
        readonly = self.console.readonly
        for wid in ("#local-start", "#local-stop", "#kube-install", "#kube-uninstall"):
            self.query_one(wid).display = not readonly
        if readonly:
            for row in self.query("#local-form .inline-row"):
                row.display = False
        if kube_available():
            self.query_one("#kube-status", Static).update(
                Text("render the manifests, apply them (server-side) and watch the rollout", style="dim"))
        else:
            self.query_one("#kube-status", Static).update(
                Text("not part of this build (no plane.kube)", style="dim"))
            self.query_one("#kube-form").display = False
        # reading plane.json and checking two pids takes microseconds: show it at once, so the
        # first frame is right; later refreshes go through the worker
        state_dir = pathlib.Path(self.console.settings.state_dir)
        self._show_status(local.status(state_dir), state_dir)

    def full_sync(self) -> None:
        if self.is_mounted and not self.busy:
            self.action_refresh_status()

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        if "instances" in touched:
            self.full_sync()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if allowed and action.startswith("kube_") and not kube_available():
            return False
        if allowed and action in ("plane_up", "plane_down", "kube_install", "kube_uninstall") and self.busy:
            return None
        return allowed

    # -- status -------------------------------------------------------------------------------------

    def action_refresh_status(self) -> None:
        self.read_status()

    @work(thread=True, exclusive=True, exit_on_error=False, name="plane status", group="install-status")
    def read_status(self) -> None:
        state_dir = pathlib.Path(self.console.settings.state_dir)
        plane = local.status(state_dir)
        self.app.call_from_thread(self._show_status, plane, state_dir)

    def _show_status(self, plane: local.LocalPlane | None, state_dir: pathlib.Path) -> None:
        self.local_plane = plane
        registered = sorted(self.plane.pods.values(), key=lambda p: p.pod_id)
        self.query_one("#local-status", Static).update(describe_local(plane, state_dir, self.now(), registered))
        if plane is not None and not self.busy:
            self._show_settings(len(plane.pods), running_capacity(plane))
        elif registered and not self.busy:  # a plane that is not embedded here: what its pods registered
            capacities = [p.capacity for p in registered if p.capacity]
            self._show_settings(len(registered), max(set(capacities), key=capacities.count) if capacities else 0)
        self._buttons()

    def _show_settings(self, pods: int, capacity: int) -> None:
        """The form shows what runs (a start button that is disabled must not suggest other values)."""
        for wid, value in (("#local-pods", str(pods)),
                           ("#local-capacity", format_size(capacity).replace(" ", "") if capacity else "")):
            box = self.query_one(wid, Input)
            if value and box.value != value and not box.has_focus:
                box.value = value

    def _buttons(self) -> None:
        self.query_one("#local-start", Button).disabled = self.local_plane is not None or self.busy
        self.query_one("#local-stop", Button).disabled = self.local_plane is None or self.busy
        self.query_one("#kube-install", Button).disabled = self.busy
        self.query_one("#kube-uninstall", Button).disabled = self.busy

    # -- buttons ------------------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = {"local-start": self.action_plane_up, "local-stop": self.action_plane_down,
                  "kube-render": self.action_kube_render, "kube-install": self.action_kube_install,
                  "kube-uninstall": self.action_kube_uninstall}.get(event.button.id or "")
        if action is not None:
            action()

    def _begin(self, text: str) -> None:
        self.busy = True
        self.query_one("#install-log", RichLog).write(text)
        self.query_one("#install-progress", ProgressBar).update(total=1, progress=0)
        self._buttons()
        self.refresh_bindings()

    def _progress(self, target: str) -> Any:
        def report(text: str, done: int, total: int) -> None:
            self.post_message(InstallProgress(text, done, total, target))

        return report

    def on_install_progress(self, message: InstallProgress) -> None:
        self.query_one("#install-log", RichLog).write(f"[{message.done}/{message.total}] {message.text}")
        bar = self.query_one("#install-progress", ProgressBar)
        bar.update(total=max(1, message.total), progress=message.done)

    def on_install_finished(self, message: InstallFinished) -> None:
        self.busy = False
        log = self.query_one("#install-log", RichLog)
        log.write(("✓ " if message.ok else "✗ ") + message.text)
        if message.ok:
            self.notify(message.text.splitlines()[0])
            if message.target == "local":
                self.console.reconnect()
        else:
            self.notify(message.text.splitlines()[0], severity="error", timeout=10)
        self.refresh_bindings()
        self.action_refresh_status()

    # -- the embedded plane -------------------------------------------------------------------------

    def action_plane_up(self) -> None:
        if not self.writable() or self.busy:
            return
        try:
            pods = int(self.query_one("#local-pods", Input).value or DEFAULT_PODS)
            capacity = parse_size(self.query_one("#local-capacity", Input).value or "256MiB")
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self._begin(f"starting the embedded plane: {pods} pods, {format_size(capacity)} each")
        self.plane_up(pods, capacity)

    def action_plane_down(self) -> None:
        if not self.writable() or self.busy:
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._begin("stopping the embedded plane")
                self.plane_down()

        self.app.push_screen(ConfirmScreen("Stop the embedded plane? Its pods unload every model.",
                                           confirm_label="Stop"), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, name="start plane", group="install")
    def plane_up(self, pods: int, capacity: int) -> None:
        self.require_writable()
        try:
            plane = local.up(self.console.settings, pods=pods, capacity=capacity, progress=self._progress("local"))
        except Exception as exc:  # noqa: BLE001 - reported in the log, not as a crash
            self.post_message(InstallFinished(False, f"{type(exc).__name__}: {exc}"))
            return
        text = f"plane up: etcd {plane.etcd_endpoint}, {len(plane.pods)} pods"
        self.post_message(InstallFinished(True, text))

    @work(thread=True, exclusive=True, exit_on_error=False, name="stop plane", group="install")
    def plane_down(self) -> None:
        self.require_writable()
        try:
            state_dir = pathlib.Path(self.console.settings.state_dir)
            stopped = local.down(state_dir, progress=self._progress("local"))
        except Exception as exc:  # noqa: BLE001
            self.post_message(InstallFinished(False, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(InstallFinished(True, "plane stopped" if stopped else "nothing was running"))

    # -- Kubernetes ---------------------------------------------------------------------------------

    def _kube_form(self) -> KubeForm | None:
        try:
            return KubeForm(
                self.query_one("#kube-namespace", Input).value, self.query_one("#kube-pods", Input).value,
                self.query_one("#kube-capacity", Input).value, self.query_one("#kube-image", Input).value,
                self.query_one("#kube-context", Input).value, self.query_one("#kube-quickstart", Checkbox).value,
            )
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return None

    def action_kube_render(self) -> None:
        form = self._kube_form()
        if form is not None:
            self.kube_render(form)

    @work(thread=True, exclusive=True, exit_on_error=False, name="render manifests", group="kube-render")
    def kube_render(self, form: KubeForm) -> None:
        from plane import kube

        objects = form.render()
        yaml_text = kube.to_yaml(objects)  # secrets masked
        title = f"{len(objects)} objects for namespace {form.namespace} (secrets masked)"
        self.app.call_from_thread(
            self.app.push_screen,
            DetailsScreen(title, [Syntax(yaml_text, "yaml", theme="ansi_dark", word_wrap=True)]),
        )

    def action_kube_install(self) -> None:
        if not self.writable() or self.busy:
            return
        form = self._kube_form()
        if form is None:
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._begin(f"installing into namespace {form.namespace} ({form.pods} pods)")
                self.kube_install(form)

        where = f"context {form.context}" if form.context else "the current kube context"
        self.app.push_screen(ConfirmScreen(f"Apply the plane's manifests to namespace {form.namespace} in "
                                           f"{where} and wait for the rollout?", confirm_label="Install"), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, name="kubernetes install", group="install")
    def kube_install(self, form: KubeForm) -> None:
        self.require_writable()
        from plane import kube

        try:
            result = kube.install(form.render(), namespace=form.namespace, context=form.context,
                                  progress=self._progress("kube"))
        except Exception as exc:  # noqa: BLE001 - KubeError and API errors become a log line
            self.post_message(InstallFinished(False, f"{type(exc).__name__}: {exc}", "kube"))
            return
        if not result.applied.ok:
            text = "apply failed: " + "; ".join(result.applied.errors[:3])
        elif result.rollout is not None:
            text = f"rollout {'ready' if result.rollout.ready else 'not ready'}: {result.rollout.message}"
        else:
            text = f"applied {len(result.applied.applied)} objects"
        self.post_message(InstallFinished(result.ok, text, "kube"))

    def action_kube_uninstall(self) -> None:
        if not self.writable() or self.busy:
            return
        form = self._kube_form()
        if form is None:
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._begin(f"uninstalling from namespace {form.namespace} (the registry volume is kept)")
                self.kube_uninstall(form)

        self.app.push_screen(ConfirmScreen(f"Delete the plane from namespace {form.namespace}? The etcd "
                                           "volume (the registry) is kept.", confirm_label="Uninstall"), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, name="kubernetes uninstall", group="install")
    def kube_uninstall(self, form: KubeForm) -> None:
        self.require_writable()
        from plane import kube

        try:
            result = kube.uninstall(namespace=form.namespace, context=form.context, progress=self._progress("kube"))
        except Exception as exc:  # noqa: BLE001
            self.post_message(InstallFinished(False, f"{type(exc).__name__}: {exc}", "kube"))
            return
        text = (f"uninstalled: {len(result.deleted)} deleted, {len(result.missing)} already gone"
                if result.ok else "uninstall failed: " + "; ".join(result.errors[:3]))
        self.post_message(InstallFinished(result.ok, text, "kube"))
