"""``python -m plane.kube``: the commands the plane's own containers run (see :mod:`plane.kube.containers`)."""

from plane.kube.containers import main

if __name__ == "__main__":
    raise SystemExit(main())
