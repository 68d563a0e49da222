"""The ONNX runtime: onnxruntime sessions, as :func:`plane.runtime.load_session` creates them.

This module adds what a model *path* needs on top of a model *file*: a directory is searched
for ``model.onnx`` (or its single ``*.onnx``, or Triton's ``<version>/model.onnx``), and
external data files next to it are found by onnxruntime relative to the ``.onnx`` file (it
refuses paths outside that directory). For a directory, ``file_size`` counts every file in it,
weights included, and the measured size is floored at that. ``model-settings.json`` may name
the outputs answered by default. The measurement itself is ``plane.runtime``'s, unchanged.
"""

from __future__ import annotations

import pathlib

from plane.runtime import load_session
from plane.runtimes.base import LoadOptions, ModelLoadError, ModelSession, files_size

__all__ = ["load"]


def load(model_id: str, file: pathlib.Path, *, source: str = "", options: LoadOptions | None = None,
         path: pathlib.Path | None = None) -> ModelSession:
    """A session for the ONNX ``file``; ``path`` is the registered path it was found under."""
    options = options or LoadOptions()
    try:
        sess = load_session(model_id, file, intra_threads=options.intra_threads, source=source)
    except ModelLoadError as exc:  # onnxruntime names the local file: a disk-cache path means nothing to operators
        raise ModelLoadError(str(exc).replace(str(file), file.name)) from exc
    if path is not None and pathlib.Path(path).is_dir():
        total = files_size(file, path, "ONNX")
        sess.file_size = total
        sess.size = max(sess.size, total)
    if options.default_outputs:
        unknown = [n for n in options.default_outputs if n not in sess.outputs]
        if unknown:
            raise ModelLoadError(f"model-settings.json of {model_id} names output(s) {', '.join(unknown)}; "
                                 f"the ONNX model has {', '.join(sess.outputs)}")
        sess.output_names = list(options.default_outputs)
    return sess
