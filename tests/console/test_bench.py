"""Responsiveness with 10,000 registered models: prints the figures, asserts no timings.

The same measurement runs standalone with ``python -m console.bench``.
"""

from __future__ import annotations

import pytest

from console import bench

pytestmark = pytest.mark.slow


async def test_ten_thousand_models_stay_usable(capsys):
    results = await bench.run(10_000, 10, 200)  # run() itself checks the tables hold every row
    with capsys.disabled():
        print("\nmesh-console with 10,000 models on 10 pods (elapsed / longest UI stall):")
        for label, ms, stall in results:
            print(f"  {label:<50} {ms:8.0f} ms {stall:8.0f} ms" if ms else f"  {label}")
    assert len(results) >= 10
