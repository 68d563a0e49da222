"""mesh-console: the Textual app.

Start-up: a thread worker connects to the plane's etcd (``--etcd``/``MESH_ETCD``, else the
embedded plane recorded in the state dir), reads every registry table once, then the history
(the event log and the last hour of the pods' per-minute stats), and then follows an etcd
watch (:mod:`console.live`). The stats live outside the watched prefix, so a timer polls the
last few minutes of them. Views draw from the app's :class:`~console.state.PlaneState` and
are told which keys each watch batch touched. When etcd goes away the worker reports it
and a one-shot timer starts a new connection attempt, so polls never overlap and the UI never
waits on etcd. When no plane is running at all, the console offers to start the embedded one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from console import commands, keymaps
from console.live import follow, read_history, read_state
from console.messages import HistoryLoaded, NoPlane, PlaneChanged, PlaneConnected, PlaneLost, StatsUpdated
from console.screens.base import ViewScreen
from console.screens.dialogs import CommandBar, ConfirmScreen, KeysScreen
from console.screens.events import EventsScreen
from console.screens.install import InstallScreen
from console.screens.models import ModelsScreen
from console.screens.overview import OverviewScreen
from console.screens.placement import PlacementScreen
from console.screens.pod import PodScreen
from console.screens.storage import StorageScreen
from console.screens.vmodels import VModelsScreen
from console.state import Change, PlaneState
from plane import local
from plane.api import PlaneClient
from plane.registry import RegistryError, now_ms
from plane.settings import MeshSettings
from plane.stats import MINUTE_MS

__all__ = ["MeshConsole", "main", "CONNECT_TIMEOUT_S", "RECONNECT_S"]

CONNECT_TIMEOUT_S = 3.0
RECONNECT_S = 2.0  # after etcd was lost
NO_PLANE_RETRY_S = 5.0  # while no plane runs, look again this often
HISTORY_MAX = 20
STATS_POLL_S = 5.0  # the pods' per-minute stats are read again this often
STATS_REFRESH_MS = 3 * MINUTE_MS  # each poll re-reads the last minutes (pods rewrite their current one)

SCREENS: dict[str, type[ViewScreen]] = {
    "overview": OverviewScreen,
    "install": InstallScreen,
    "storage": StorageScreen,
    "models": ModelsScreen,
    "vmodels": VModelsScreen,
    "placement": PlacementScreen,
    "events": EventsScreen,
}


class MeshConsole(App[None]):
    """The console. ``state`` (with no etcd connection) is for demos and snapshot tests;
    ``clock`` and ``tz`` pin "now" and the time zone so the text is reproducible."""

    CSS_PATH = "app.tcss"
    TITLE = "mesh-console"
    BINDINGS = keymaps.GLOBAL
    MODES = dict(SCREENS)

    connection: reactive[str] = reactive("connecting…")
    connected: reactive[bool] = reactive(False)

    def __init__(self, settings: MeshSettings | None = None, *, readonly: bool = False,
                 clock: Callable[[], int] | None = None, tz: dt.tzinfo | None = None,
                 state: PlaneState | None = None, endpoint_label: str = "",
                 start_view: str = "overview", offer_start: bool = True) -> None:
        super().__init__()
        self.settings = settings or MeshSettings()
        self.readonly = readonly
        self.clock: Callable[[], int] = clock or now_ms
        self.tz = tz
        self.offline = state is not None
        self.state = state or PlaneState()
        self.client: PlaneClient | None = None
        self.start_view = start_view if start_view in SCREENS else "overview"
        self.offer_start = offer_start and not readonly
        self._endpoint_label = endpoint_label
        self._stop = threading.Event()
        self._history: list[str] = []
        self._offered = False
        self._was_connected = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.switch_mode(self.start_view)
        if self.offline:
            self.connected = True
            self.connection = self._endpoint_label or "demo data"
        else:
            self.connect_plane()
            self.set_interval(STATS_POLL_S, self._poll_stats)

    def on_unmount(self) -> None:
        self._stop.set()  # the plane worker closes its client once the watch has stopped

    def require_client(self) -> PlaneClient:
        """The connected client, for workers; raises when etcd is not connected."""
        client = self.client
        if client is None:
            raise RegistryError(f"not connected to etcd ({self.connection})")
        return client

    def reconnect(self) -> None:
        """Drop the current connection (if any) and connect again now."""
        self._stop.set()
        self.call_later(self.connect_plane)

    # -- the plane worker ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="plane", name="plane")
    def connect_plane(self) -> None:
        """Connect, read everything, then follow the watch until it fails or the app stops."""
        self._stop.set()  # a previous connection (if any) stops following
        self._stop = stop = threading.Event()
        try:
            client = PlaneClient.connect(self.settings, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - every failure is shown and retried
            embedded = not self.settings.etcd_endpoints()
            if embedded and local.status(pathlib.Path(self.settings.state_dir)) is None:
                self.post_message(NoPlane(str(exc)))
            else:
                self.post_message(PlaneLost(str(exc), RECONNECT_S))
            return
        self.client = client

        def emit(changes: list[Change]) -> None:
            self.post_message(PlaneChanged(changes))

        try:
            state = client.run_async(read_state(client.registry))
            self.post_message(PlaneConnected(client.etcd_endpoint, state))
            self.post_message(read_history(client, self.clock()))  # before any watch batch
            client.run_async(follow(client.registry, state.revision + 1, emit, stop),
                             timeout=None)  # runs until stop or failure
        except Exception as exc:  # noqa: BLE001
            if not stop.is_set():
                self.post_message(PlaneLost(str(exc), RECONNECT_S))
        finally:
            if self.client is client:
                self.client = None
            client.close()

    def on_plane_connected(self, message: PlaneConnected) -> None:
        self.state = message.state
        self.connected = True
        self.connection = f"etcd {message.endpoint} (prefix {self.settings.etcd_prefix})"
        if not self._was_connected and self._offered:
            self.notify(f"connected to etcd {message.endpoint}")
        self._was_connected = True
        for screen in self._views():
            screen.full_sync()

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        state = self.state
        if message.error:
            state.history_pending, state.history_error = False, message.error
            self.notify(f"the event log and stats could not be read: {message.error}", severity="warning")
        else:
            state.load_history(message.events, message.stats, self.clock())
        with self.batch_update():
            for screen in self._views():
                screen.history_loaded()

    def _poll_stats(self) -> None:
        if self.client is not None and not self.state.history_pending:
            self.poll_stats()

    @work(thread=True, exclusive=True, exit_on_error=False, group="stats", name="stats")
    def poll_stats(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            records = client.stats(since_ms=self.clock() - STATS_REFRESH_MS)
        except Exception as exc:  # noqa: BLE001 - a lost etcd is reported by the plane worker
            self.post_message(StatsUpdated([], str(exc)))
            return
        self.post_message(StatsUpdated(records))

    def on_stats_updated(self, message: StatsUpdated) -> None:
        if message.error or self.state.history_pending:
            return
        if self.state.merge_stats(message.records, self.clock()):
            screen = self._top_view()
            if screen is not None:
                screen.stats_changed()

    def on_plane_changed(self, message: PlaneChanged) -> None:
        touched = self.state.apply(message.changes)
        screen = self._top_view()  # a view under it (Placement under a pod view) redraws on resume
        if screen is not None:
            with self.batch_update():
                screen.plane_changed(touched)

    def on_plane_lost(self, message: PlaneLost) -> None:
        if self.connected:
            self.notify(f"etcd unavailable: {message.reason}", severity="warning", timeout=6)
        self.connected = False
        self.connection = f"etcd unavailable, reconnecting every {message.retry_s:.0f}s: {message.reason}"
        self.set_timer(message.retry_s, self.connect_plane)

    def on_no_plane(self, message: NoPlane) -> None:
        self.connected = False
        self.connection = f"no plane running ({self.settings.state_dir}): start one in Install (2)"
        self.set_timer(NO_PLANE_RETRY_S, self.connect_plane)
        if self.offer_start and not self._offered:
            self._offered = True

            def answer(start: bool | None) -> None:
                if start:
                    self.action_switch_view("install")
                    screen = self.screen
                    if isinstance(screen, InstallScreen):
                        screen.action_plane_up()

            self.push_screen(
                ConfirmScreen("No plane is running. Start the embedded plane (etcd and runtime pods) "
                              "on this machine?", confirm_label="Start"),
                answer,
            )

    def _top_view(self) -> ViewScreen | None:
        """The view on screen (under a dialog, if one is open)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ViewScreen) and screen.is_mounted:
                return screen
        return None

    def _views(self) -> Iterable[ViewScreen]:
        for screen in self.screen_stack:
            if isinstance(screen, ViewScreen) and screen.is_mounted:
                yield screen

    # -- errors from every worker -------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.show_worker_error(event.worker)

    def show_worker_error(self, worker: Worker) -> None:
        """A worker's failure as an error notification (screens forward theirs here: a
        worker's state messages do not bubble)."""
        self.notify(f"{worker.error}", title=f"{worker.name or 'task'} failed", severity="error", timeout=8)

    # -- navigation ---------------------------------------------------------------------------------

    def action_switch_view(self, name: str) -> None:
        if name not in SCREENS:
            self.run_command(name)
            return
        while len(self.screen_stack) > 1:  # dialogs and the pod view close
            self.pop_screen()
        if name == self.current_mode:
            return
        self._history = [*self._history[-HISTORY_MAX:], self.current_mode]
        self.switch_mode(name)

    async def action_back(self) -> None:  # App.action_back is a coroutine
        screen = self.screen
        if isinstance(screen, ViewScreen) and screen.handle_back():
            return
        if len(self.screen_stack) > 1:
            self.pop_screen()
            return
        if self._history:
            self.switch_mode(self._history.pop())

    def action_command_bar(self) -> None:
        def chosen(text: str | None) -> None:
            if text:
                self.run_command(text)

        self.push_screen(CommandBar([*SCREENS, commands.POD_COMMAND], pods=sorted(self.state.pods)), chosen)

    def run_command(self, text: str) -> None:
        """``:plac``, ``:ev``, ``:pod pod-1``: views by prefix; ambiguous ones list the candidates."""
        pods = sorted({*self.state.pods, *(p for m in self.state.models.values() for p in m.copies)})
        found = commands.resolve(text, list(SCREENS), pods)
        if found.error:
            self.notify(found.error, severity="warning")
        elif found.pod:
            self.open_pod(found.pod)
        elif found.view:
            self.action_switch_view(found.view)

    def open_pod(self, pod_id: str) -> None:
        """Show the pod view of ``pod_id`` over the current view (esc goes back)."""
        screen = self.screen
        if isinstance(screen, PodScreen):
            if screen.pod_id == pod_id:
                return
            self.pop_screen()
        elif len(self.screen_stack) > 1 and not isinstance(screen, ViewScreen):
            self.pop_screen()
        self.push_screen(PodScreen(pod_id))

    def action_keys(self) -> None:
        screen = self.screen
        if isinstance(screen, ViewScreen):
            self.push_screen(KeysScreen(screen, screen.VIEW_TITLE))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for view in keymaps.VIEWS:
            yield SystemCommand(f"View: {view.title}", view.description,
                                lambda name=view.name: self.action_switch_view(name))
        for pod in sorted(self.state.pods):
            yield SystemCommand(f"Pod: {pod}", "its copies, request rate, events and log",
                                lambda pod=pod: self.open_pod(pod))
        if not self.offline:
            yield SystemCommand("Reconnect", "connect to etcd again now", self.reconnect)
        yield from super().get_system_commands(screen)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mesh-console",
        description="Terminal UI of the mesh plane: install it, configure storage, register models, "
                    "watch placement and evictions live.")
    parser.add_argument("--etcd", default=None,
                        help="etcd endpoint(s) host:port[,host:port] (default: MESH_ETCD, "
                        "else the embedded plane in the state dir)")
    parser.add_argument("--state-dir", default=None, help="the embedded plane's state dir (MESH_STATE_DIR)")
    parser.add_argument("--prefix", default=None, help="registry prefix in etcd (MESH_ETCD_PREFIX)")
    parser.add_argument("--readonly", action="store_true",
                        help="hide and block every action that changes anything")
    parser.add_argument("--view", default="overview", choices=list(SCREENS), help="view to open first")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> MeshSettings:
    update: dict[str, Any] = {}
    if args.etcd:
        update["etcd"] = args.etcd
    if args.state_dir:
        update["state_dir"] = pathlib.Path(args.state_dir).expanduser()
    if args.prefix:
        update["etcd_prefix"] = args.prefix
    return MeshSettings().model_copy(update=update)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    MeshConsole(settings_from_args(args), readonly=args.readonly, start_view=args.view).run()


if __name__ == "__main__":
    main()
