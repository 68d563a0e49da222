"""Responsiveness with 10,000 registered models on 20 pods: prints the figures, asserts only
that every step ran on the full plane (no timings: the machine is shared).

The same measurement runs standalone with ``python -m console.bench``.
"""

from __future__ import annotations

import pytest

from console import bench

pytestmark = pytest.mark.slow


async def test_ten_thousand_models_on_twenty_pods_stay_usable(capsys):
    rows = await bench.run(10_000, 20, 200)  # run() itself checks the tables hold every row
    with capsys.disabled():
        print("\nmesh-console with 10,000 models on 20 pods:")
        print("\n".join(bench.format_rows(rows)))
    measured = [r for r in rows if not r.note]
    assert len(measured) >= 20
    fills = {r.what: r for r in measured if r.first_ms is not None}
    assert {"models: open view, fill table", "placement: open view, fill matrix"} <= set(fills)
    assert all(r.first_ms is not None and r.first_ms <= r.elapsed_ms for r in fills.values())
    assert rows[-1].what.startswith("longest UI freeze") and rows[-1].freeze_ms > 0
