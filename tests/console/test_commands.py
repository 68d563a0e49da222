"""``:`` by prefix (``:plac``, ``:ev``; ambiguous prefixes list the candidates), ``:pod NAME``,
and the first field of every form focused when it opens."""

from __future__ import annotations

from tests_console_support import SIZE, wait_for
from textual.widgets import Input

from console.commands import Resolved, resolve
from console.screens.dialogs import CommandBar, ConfirmScreen, FormScreen
from console.screens.placement import PlacementScreen
from console.screens.pod import PodScreen

VIEWS = ["overview", "install", "storage", "models", "vmodels", "placement", "events"]
PODS = ["pod-0", "pod-1", "pod-2"]


def test_views_resolve_by_any_unambiguous_prefix():
    assert resolve(":plac", VIEWS, PODS) == Resolved(view="placement")
    assert resolve("ev", VIEWS, PODS) == Resolved(view="events")
    assert resolve("MODELS", VIEWS, PODS) == Resolved(view="models")
    assert resolve("vm", VIEWS, PODS) == Resolved(view="vmodels")
    assert resolve("  ", VIEWS, PODS) == Resolved()


def test_ambiguous_and_unknown_prefixes_say_why():
    ambiguous = resolve("p", VIEWS, PODS)
    assert not ambiguous.view and not ambiguous.pod
    assert "placement" in ambiguous.error and "pod" in ambiguous.error
    unknown = resolve("plx", VIEWS, PODS)
    assert unknown.error.startswith("no view named 'plx'") and "placement" in unknown.error


def test_pod_by_name_prefix_or_alone():
    assert resolve("pod pod-1", VIEWS, PODS) == Resolved(pod="pod-1")
    assert resolve("po pod-2", VIEWS, PODS) == Resolved(pod="pod-2")
    assert resolve("pod-0", VIEWS, PODS) == Resolved(pod="pod-0")  # a pod's name is a command too
    assert resolve("pod", VIEWS, ["only-pod"]) == Resolved(pod="only-pod")
    assert "pod-0 pod-1 pod-2" in resolve("pod", VIEWS, PODS).error
    assert "could be pod pod-0, pod-1, pod-2" in resolve("pod pod", VIEWS, PODS).error
    assert "no pod named 'pod-9'" in resolve("pod pod-9", VIEWS, PODS).error


async def test_colon_prefixes_switch_views_and_ambiguity_is_shown(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"plac", "enter")
        assert app.current_mode == "placement"
        await pilot.press("colon", *"ev", "enter")
        assert app.current_mode == "events"
        await pilot.press("colon", "p", "enter")
        assert app.current_mode == "events"  # nothing chosen
        messages = [n.message for n in app._notifications]
        assert any("placement" in m and "pod" in m for m in messages), messages
        await pilot.press("colon", *"nope", "enter")
        assert any("no view named 'nope'" in n.message for n in app._notifications)


async def test_colon_pod_opens_the_pod_view_and_esc_goes_back(demo_app):
    app = demo_app(start_view="placement")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon")
        assert isinstance(app.screen, CommandBar)
        await pilot.press(*"pod pod-1", "enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, PodScreen) and app.screen, what="the pod view")
        assert screen.pod_id == "pod-1"
        await pilot.press("escape")
        assert isinstance(app.screen, PlacementScreen)


async def focused_field(pilot, *keys: str) -> str:
    app = pilot.app
    await pilot.press(*keys)
    form = await wait_for(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="a form")
    await pilot.pause()
    focused = form.focused
    assert isinstance(focused, Input), focused
    await pilot.press("escape")
    return focused.id or ""


async def test_every_form_opens_with_its_first_field_focused(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        assert await focused_field(pilot, "4", "r") == "field-model_id"
        assert await focused_field(pilot, "3", "a") == "field-key"
        assert await focused_field(pilot, "5", "n") == "field-vmodel_id"
        assert await focused_field(pilot, "6", "c") == "field-min_copies"
        # typing goes straight into the field
        await pilot.press("4", "r", *"abc")
        assert app.screen.query_one("#field-model_id", Input).value == "abc"
        # a confirmation focuses Cancel: a stray enter does not unregister
        await pilot.press("escape")
        calls: list[str] = []
        app.screen.unregister = calls.append  # what a confirmation would start
        await pilot.press("d")
        confirm = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen,
                                 what="the confirmation")
        await pilot.pause()
        assert confirm.focused is not None and confirm.focused.id == "no"
        await pilot.press("enter")
        assert not isinstance(app.screen, ConfirmScreen)
        assert calls == []  # cancelled: nothing was started
