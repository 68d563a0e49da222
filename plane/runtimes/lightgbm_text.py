"""A check of LightGBM's text model format, run before LightGBM parses a file.

LightGBM's C++ loader trusts its input. Measured with lightgbm 4.7 on a 3-class model cut short
at 10 points: a cut inside the trees aborts the process (``terminate called without an active
exception``: the parse error is thrown inside an OpenMP loop), a cut inside the parameters
section segfaults, and only a cut inside the header raises a LightGBMError. Its tree parser
also reads a fixed number of values per field whatever the line holds, and follows child
indexes it never checks. A pod must survive a truncated download or a wrong file, so this
module checks, in Python, everything the loader relies on: the header keys, that every tree
lies where ``tree_sizes`` says and is complete, that each field has exactly the count its
``num_leaves``/``num_cat`` imply, that child indexes and split features are in range and the
nodes form a tree, and that the parameters section is well formed and closed.

It cannot make LightGBM safe against a file crafted to break it (nothing short of a separate
process would); it makes every truncated or foreign file a clean ModelLoadError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plane.runtimes.base import ModelLoadError

__all__ = ["Header", "check"]

_MAX_TREE_LINES = 22  # LightGBM's Tree parser reads at most this many key=value lines
_PARAM_LINE = re.compile(rb"^\[[A-Za-z0-9_]+: .*\]$")
_INT8 = range(-128, 128)
# Numbers as LightGBM writes and parses them (a token it cannot parse is a fatal error inside its
# parallel tree parse: the process aborts); Python's int()/float() accept more ("1_0", " 1").
_INT = re.compile(rb"^[+-]?[0-9]+$")
_FLOAT = re.compile(rb"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(inf|infinity|nan)$", re.IGNORECASE)


@dataclass(frozen=True)
class Header:
    """What the runtime needs from the header, once the file has passed :func:`check`."""

    num_class: int
    num_tree_per_iteration: int
    max_feature_idx: int
    objective: str  # the objective's name ("binary", "multiclass", "regression" ...), "" if none
    n_trees: int


class _Bad(Exception):
    pass


def _int(value: bytes, what: str, lo: int | None = None) -> int:
    if not _INT.match(value):
        raise _Bad(f"{what} is not an integer")
    n = int(value)
    if lo is not None and n < lo:
        raise _Bad(f"{what} must be at least {lo}")
    return n


def _ints(value: bytes, count: int, what: str) -> list[int]:
    parts = value.split()
    if len(parts) != count:
        raise _Bad(f"{what} has {len(parts)} values, {count} expected")
    return [_int(p, what) for p in parts]


def _floats(value: bytes, count: int, what: str) -> list[float]:
    parts = value.split()
    if len(parts) != count:
        raise _Bad(f"{what} has {len(parts)} values, {count} expected")
    if not all(_FLOAT.match(p) for p in parts):
        raise _Bad(f"{what} holds a value that is not a number")
    return [float(p) for p in parts]


def _header(lines: list[bytes]) -> dict[bytes, bytes]:
    if not lines or lines[0] != b"tree":
        raise _Bad("it does not start with the line 'tree'")
    keys: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(b"=")
        if sep and b"=" in value and key != b"feature_names":
            raise _Bad(f"header line {line[:60]!r} has more than one '='")
        keys[key] = value
    for required in (b"version", b"num_class", b"label_index", b"max_feature_idx", b"feature_names",
                     b"feature_infos"):
        if required not in keys:
            raise _Bad(f"the header has no {required.decode()}")
    return keys


def _check_nodes(i: int, left: list[int], right: list[int], n_leaves: int) -> None:
    """Child indexes in range, every internal node reached exactly once from the root: no cycle."""
    for child in (*left, *right):
        if not -n_leaves <= child <= n_leaves - 2:
            raise _Bad(f"tree {i} has child index {child} outside [-{n_leaves}, {n_leaves - 2}]")
    seen = {0}
    stack = [0]
    leaves = 0
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child < 0:
                leaves += 1
            elif child in seen:
                raise _Bad(f"tree {i} is not a tree: node {child} is reached twice")
            else:
                seen.add(child)
                stack.append(child)
    if len(seen) != n_leaves - 1 or leaves != n_leaves:
        raise _Bad(f"tree {i} does not connect its {n_leaves - 1} nodes and {n_leaves} leaves")


def _tree(i: int, body: list[bytes], max_feature: int) -> None:
    if len(body) > _MAX_TREE_LINES:
        raise _Bad(f"tree {i} has {len(body)} lines, LightGBM reads at most {_MAX_TREE_LINES}")
    kv: dict[bytes, bytes] = {}
    for line in body:
        key, sep, value = line.partition(b"=")
        if not sep:
            raise _Bad(f"tree {i} has a line without '=': {line[:60]!r}")
        kv[key] = value
    for required in (b"num_leaves", b"num_cat", b"leaf_value"):
        if required not in kv:
            raise _Bad(f"tree {i} has no {required.decode()}")
    n = _int(kv[b"num_leaves"], f"tree {i} num_leaves", 1)
    n_cat = _int(kv[b"num_cat"], f"tree {i} num_cat", 0)
    _floats(kv[b"leaf_value"], n, f"tree {i} leaf_value")
    if b"shrinkage" in kv:
        _floats(kv[b"shrinkage"], 1, f"tree {i} shrinkage")
    for key in (b"leaf_weight", b"leaf_const"):
        if key in kv:
            _floats(kv[key], n, f"tree {i} {key.decode()}")
    if b"leaf_count" in kv:
        _ints(kv[b"leaf_count"], n, f"tree {i} leaf_count")
    linear = _int(kv.get(b"is_linear", b"0"), f"tree {i} is_linear") != 0
    if n <= 1 and not linear:
        return
    for required in (b"left_child", b"right_child", b"split_feature", b"threshold"):
        if required not in kv:
            raise _Bad(f"tree {i} has no {required.decode()}")
    left = _ints(kv[b"left_child"], n - 1, f"tree {i} left_child")
    right = _ints(kv[b"right_child"], n - 1, f"tree {i} right_child")
    features = _ints(kv[b"split_feature"], n - 1, f"tree {i} split_feature")
    thresholds = _floats(kv[b"threshold"], n - 1, f"tree {i} threshold")
    for key in (b"split_gain", b"internal_value", b"internal_weight"):
        if key in kv:
            _floats(kv[key], n - 1, f"tree {i} {key.decode()}")
    if b"internal_count" in kv:
        _ints(kv[b"internal_count"], n - 1, f"tree {i} internal_count")
    decisions = [0] * (n - 1)  # LightGBM's default
    if b"decision_type" in kv:
        decisions = _ints(kv[b"decision_type"], n - 1, f"tree {i} decision_type")
    if any(f < 0 or f > max_feature for f in features):
        raise _Bad(f"tree {i} splits on a feature outside 0..{max_feature}")
    if any(d not in _INT8 for d in decisions):
        raise _Bad(f"tree {i} has a decision_type outside a byte")
    if n > 1:
        _check_nodes(i, left, right, n)
    categorical = [t for d, t in zip(decisions, thresholds, strict=True) if d & 1]
    if categorical or n_cat:
        if b"cat_boundaries" not in kv or b"cat_threshold" not in kv:
            raise _Bad(f"tree {i} has categorical splits but no cat_boundaries/cat_threshold")
        bounds = _ints(kv[b"cat_boundaries"], n_cat + 1, f"tree {i} cat_boundaries")
        if bounds[0] != 0 or any(b > c for b, c in zip(bounds, bounds[1:], strict=False)):
            raise _Bad(f"tree {i} cat_boundaries are not increasing from 0")
        cats = _ints(kv[b"cat_threshold"], bounds[-1], f"tree {i} cat_threshold")
        if any(c < 0 or c >= 1 << 32 for c in cats):
            raise _Bad(f"tree {i} cat_threshold holds a value outside 32 bits")
        if any(not float(t).is_integer() or not 0 <= t < n_cat for t in categorical):
            raise _Bad(f"tree {i} has a categorical split whose index is not in 0..{n_cat - 1}")
    if linear and b"num_features" in kv:
        counts = _ints(kv[b"num_features"], n, f"tree {i} num_features")
        if any(c < 0 for c in counts):
            raise _Bad(f"tree {i} num_features is negative")
        if b"leaf_features" in kv:
            leaf_features = _ints(kv[b"leaf_features"], sum(counts), f"tree {i} leaf_features")
            if any(f < 0 or f > max_feature for f in leaf_features):
                raise _Bad(f"tree {i} has a linear leaf on a feature outside 0..{max_feature}")
        if b"leaf_coeff" in kv:
            _floats(kv[b"leaf_coeff"], sum(counts), f"tree {i} leaf_coeff")


def _block(i: int, block: bytes, max_feature: int) -> None:
    lines = block.split(b"\n")
    if not lines[0].startswith(b"Tree="):
        raise _Bad(f"tree {i} does not start where tree_sizes says")
    try:
        end = lines.index(b"", 1)
    except ValueError:
        raise _Bad(f"tree {i} is cut short") from None
    _tree(i, lines[1:end], max_feature)


def _trees(data: bytes, start: int, sizes: list[int] | None, max_feature: int) -> tuple[int, int]:
    """Check the trees from byte ``start``; returns (number of trees, where they end)."""
    if sizes is not None:
        pos = start
        for i, size in enumerate(sizes):
            if pos + size > len(data):
                raise _Bad(f"tree {i} is cut short (the file ends inside it)")
            block = data[pos:pos + size]
            if not block.endswith(b"\n\n"):
                raise _Bad(f"tree {i} does not end where tree_sizes says")
            _block(i, block, max_feature)
            pos += size
        return len(sizes), pos
    count, pos = 0, start
    while data.startswith(b"Tree=", pos):
        end = data.find(b"\n\n", pos)
        if end < 0:
            raise _Bad(f"tree {count} is cut short")
        _block(count, data[pos:end + 1] + b"\n", max_feature)
        count += 1
        pos = end + 2
        while data.startswith(b"\n", pos):
            pos += 1
    return count, pos


def _tail(data: bytes, pos: int) -> None:
    lines = data[pos:].split(b"\n")
    if b"end of trees" not in lines[:3]:
        raise _Bad("the trees are not followed by 'end of trees'")
    for opening, closing, pattern in ((b"parameters:", b"end of parameters", _PARAM_LINE),
                                      (b"parser:", b"end of parser", None)):
        if opening not in lines:
            continue
        at = lines.index(opening)
        if closing not in lines[at:]:
            raise _Bad(f"the {opening.decode()} section is cut short (no '{closing.decode()}')")
        if pattern is not None:
            for line in lines[at + 1:lines.index(closing, at)]:
                if line and not pattern.match(line):
                    raise _Bad(f"parameter line {line[:60]!r} is not '[name: value]'")


def check(data: bytes) -> Header:
    """Raise ModelLoadError unless ``data`` is a complete, consistent LightGBM text model."""
    try:
        if b"\x00" in data or b"\r" in data:
            raise _Bad("it holds NUL or carriage-return bytes (LightGBM writes neither)")
        first = data.find(b"\nTree=")
        if first < 0:
            raise _Bad("it holds no trees" if data.startswith(b"tree\n") else "it does not start with 'tree'")
        keys = _header(data[:first].split(b"\n"))
        num_class = _int(keys[b"num_class"], "num_class", 1)
        per_iteration = _int(keys.get(b"num_tree_per_iteration", keys[b"num_class"]), "num_tree_per_iteration", 1)
        if per_iteration != num_class:  # LightGBM writes one tree per class per iteration, no more
            raise _Bad(f"num_tree_per_iteration {per_iteration} differs from num_class {num_class}")
        max_feature = _int(keys[b"max_feature_idx"], "max_feature_idx", 0)
        _int(keys[b"label_index"], "label_index")
        for key in (b"feature_names", b"feature_infos"):
            if len(keys[key].split(b" ")) != max_feature + 1:
                raise _Bad(f"{key.decode()} does not have max_feature_idx + 1 = {max_feature + 1} entries")
        sizes = None
        if b"tree_sizes" in keys:
            sizes = [_int(s, "tree_sizes", 1) for s in keys[b"tree_sizes"].split()]
        n_trees, end = _trees(data, first + 1, sizes, max_feature)
        if n_trees == 0 or n_trees % per_iteration:
            raise _Bad(f"it has {n_trees} trees, not a whole number of iterations of {per_iteration}")
        _tail(data, end)
        objective = keys.get(b"objective", b"").split(b" ")[0].decode("ascii", "replace")
    except _Bad as exc:
        raise ModelLoadError(f"not a valid LightGBM text model: {exc}") from None
    return Header(num_class, per_iteration, max_feature, objective, n_trees)
