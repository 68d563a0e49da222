"""Key bindings as data: one list per view, plus the app's global keys.

Actions that change the plane are named in :data:`MUTATING`; with ``--readonly`` the
screens hide them from the footer and refuse to run them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

__all__ = ["View", "VIEWS", "GLOBAL", "VIEW_KEYS", "MUTATING"]


@dataclass(frozen=True)
class View:
    name: str
    key: str
    title: str
    description: str


VIEWS: tuple[View, ...] = (
    View("overview", "1", "Overview", "pods ready, models, capacity, recent loads and evictions"),
    View("install", "2", "Install", "start or stop the embedded plane"),
    View("storage", "3", "Storage", "storage configs: add, edit, remove, test"),
    View("models", "4", "Models", "registered models: register, unregister, details"),
    View("vmodels", "5", "VModels", "virtual models (aliases) and their targets"),
    View("placement", "6", "Placement", "live matrix of pods x models (copy sizes, ages); unload, load, pin"),
    View("events", "7", "Events", "live stream of loads, unloads, evictions, failures"),
)

# Typed as Textual types BINDINGS (a list is invariant: list[Binding] is not list[BindingType]).
GLOBAL: list[BindingType] = [
    Binding("colon", "command_bar", ":view", key_display=":"),
    Binding("question_mark", "keys", "keys", key_display="?"),
    Binding("escape", "back", "back"),
    Binding("ctrl+p", "command_palette", "palette", show=False),
    Binding("q", "quit", "quit"),
    *[Binding(v.key, f"switch_view('{v.name}')", v.title, show=False) for v in VIEWS],
]

VIEW_KEYS: dict[str, list[BindingType]] = {
    "overview": [],
    "install": [
        Binding("u", "plane_up", "start plane"),
        Binding("D", "plane_down", "stop plane"),
        Binding("R", "refresh_status", "refresh", show=False),
        Binding("m", "kube_render", "manifests"),
        Binding("K", "kube_install", "k8s install"),
        Binding("X", "kube_uninstall", "k8s uninstall"),
    ],
    "storage": [
        Binding("a", "add", "add"),
        Binding("e", "edit", "edit"),
        Binding("d", "remove", "remove"),
        Binding("t", "test", "test"),
    ],
    "models": [
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("s", "sort", "sort"),
        Binding("r", "register", "register"),
        Binding("d", "unregister", "unregister"),
        Binding("l", "load", "load"),
        Binding("i", "details", "details"),
    ],
    "vmodels": [
        Binding("n", "set_vmodel", "set"),
        Binding("d", "delete_vmodel", "delete"),
    ],
    "placement": [
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("s", "sort", "sort"),
        Binding("o", "open_pod", "pod"),
        Binding("u", "unload_copy", "unload"),
        Binding("l", "load_here", "load"),
        Binding("p", "toggle_pin", "pin"),
        Binding("c", "copies_policy", "copies"),
        Binding("i", "details", "details", show=False),
    ],
    "pod": [
        Binding("s", "sort", "sort"),
        Binding("u", "unload_copy", "unload"),
        Binding("p", "toggle_pin", "pin"),
        Binding("c", "copies_policy", "copies"),
        Binding("R", "refresh", "refresh"),
    ],
    "events": [
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("p", "toggle_follow", "follow/pause"),
        Binding("c", "clear_filter", "clear filter"),
    ],
}

MUTATING = frozenset({
    "plane_up", "plane_down", "kube_install", "kube_uninstall", "add", "edit", "remove", "register",
    "unregister", "load", "set_vmodel", "delete_vmodel", "unload_copy", "load_here", "toggle_pin", "copies_policy",
})
