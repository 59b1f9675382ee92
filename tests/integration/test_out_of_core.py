"""A GA360 export larger than DuckDB's memory limit flattens out of core to the counts of the
in-memory path (the shared GA day, ``scripts/bench_out_of_core.py``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clickstream import ga360
from scripts import bench_out_of_core as bench

pytestmark = pytest.mark.integration


def test_ga_day_as_ndjson_out_of_core_equals_the_in_memory_load(
    ga_sample_path: Path, tmp_path: Path
) -> None:
    export = tmp_path / "ga_sessions_20170801.json"
    size = bench.make_export(ga_sample_path, 1, export)
    # an eighth of 96 MB per piece: the day's 63 MB of NDJSON in 6 pieces
    counts = ga360.flatten_out_of_core(
        export, tmp_path / "flat", memory_limit="96MB", threads=1, show_progress=False
    )
    assert size > 5 * 12_000_000
    # the figures of ../shared/data/README.md
    assert (counts["page_views"], counts["sessions"], counts["page_paths"]) == (10_939, 2_556, 314)
    assert (counts["transactions"], counts["revenue"]) == (45, pytest.approx(8_902.0))
    assert counts["source_event_hits"] == 2_294
    assert counts["totals_transaction_revenue"] == pytest.approx(8_890.0)
    in_memory = ga360.load(ga_sample_path, show_progress=False)
    via_flat = ga360.load(tmp_path / "flat", show_progress=False)
    pd.testing.assert_frame_equal(via_flat.hits, in_memory.hits)


@pytest.mark.slow
def test_export_ten_times_the_memory_limit_counts_as_copies_of_the_day(tmp_path: Path) -> None:
    """16 copies of the day (1.0 GB of NDJSON), DuckDB held to 96 MB (about 1 minute here)."""
    if not bench.DAY.is_file():
        pytest.skip(f"needs the shared GA day: {bench.DAY}")
    result = bench.run(16, "96MB", 1, tmp_path)
    assert result["export_bytes"] >= 10 * 96_000_000
    assert result["differences"] == []
    ooc = result["out_of_core"]
    assert ooc["page_views"] == 16 * 10_939 and ooc["sessions"] == 16 * 2_556
    # the whole export never was in memory: the process peaked far below its size
    assert ooc["peak_rss_mb"] * 1e6 < result["export_bytes"] / 3
