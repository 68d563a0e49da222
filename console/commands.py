"""What ``:`` understands: a view by any unambiguous prefix (``:plac``, ``:ev``), and
``:pod NAME`` (or just a pod's name) for the pod view. Pure functions, tested without an app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Resolved", "resolve", "POD_COMMAND"]

POD_COMMAND = "pod"


@dataclass(frozen=True)
class Resolved:
    """What a command line asked for: a view, a pod, or an error to show (one of the three)."""

    view: str = ""
    pod: str = ""
    error: str = ""


def _pick(word: str, names: Sequence[str], what: str) -> tuple[str, str]:
    """(name, error): ``word`` itself, else the one name it begins; else why not."""
    if word in names:
        return word, ""
    folded = word.lower()
    exact = [n for n in names if n.lower() == folded]
    if exact:
        return exact[0], ""
    hits = [n for n in names if n.lower().startswith(folded)]
    if len(hits) == 1:
        return hits[0], ""
    if hits:
        return "", f"{word!r} could be {what} {', '.join(hits)}: type more"
    return "", f"no {what} named {word!r}: {' '.join(names) or '(none)'}"


def resolve(text: str, views: Sequence[str], pods: Sequence[str]) -> Resolved:
    """Resolve ``text`` (with or without the leading ``:``) against the view names and the
    pods known now. An empty line resolves to nothing (no error)."""
    words = text.strip().lstrip(":").split()
    if not words:
        return Resolved()
    head, rest = words[0], words[1:]
    if head in pods and not rest:
        return Resolved(pod=head)
    name, error = _pick(head, [*views, POD_COMMAND], "view")
    if error:
        return Resolved(error=error)
    if name != POD_COMMAND:
        return Resolved(view=name)
    if not rest:
        if len(pods) == 1:
            return Resolved(pod=pods[0])
        return Resolved(error=f"which pod? :pod NAME, one of {' '.join(pods) or '(no pods running)'}")
    pod, error = _pick(rest[0], pods, "pod")
    return Resolved(pod=pod, error=error)
