"""mesh-console: a Textual terminal UI for the mesh plane.

The console never talks to etcd its own way: it reads and changes the plane through
:mod:`plane.api` (and the registry watch that module exposes), like the CLI and the
dashboard do.
"""
