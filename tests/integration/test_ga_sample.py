"""The GA360 sample day (../shared/data/ga_sample_20170801.parquet): known counts end to end."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from clickstream import ga360

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loaded(ga_sample_path: Path) -> ga360.LoadResult:
    return ga360.load(ga_sample_path, show_progress=False)


def test_known_counts(loaded: ga360.LoadResult) -> None:
    hits = loaded.hits
    assert hits["session_id"].nunique() == 2_556
    assert hits["visitor_id"].nunique() == 2_293
    assert len(hits) == 10_939  # PAGE hits; the 2,294 EVENT hits are not page views
    assert loaded.info["source_event_hits"] == 2_294
    assert hits["page_raw"].nunique() == 314
    assert hits.groupby("session_id")["is_transaction"].any().sum() == 43
    assert hits["is_transaction"].sum() == 45
    # hit-level revenue (used) vs session totals (recorded only): 8,902.00 vs 8,890.00
    assert hits["revenue"].sum() == pytest.approx(8_902.00, abs=1e-6)
    assert loaded.info["totals_transaction_revenue"] == pytest.approx(8_890.00, abs=1e-6)
    assert loaded.info["totals_transactions"] == 45
    assert loaded.dropped["sessions_without_page_views"] == 0
    # every session's steps run 0..n-1 and the last page's time on page is unknown
    last = hits.groupby("session_id")["step"].transform("max") == hits["step"]
    assert hits.loc[last, "time_on_page_s"].isna().all()
    assert (hits.loc[~last, "time_on_page_s"] >= 0).all()


def test_ndjson_copy_loads_to_the_same_table(
    loaded: ga360.LoadResult, ga_sample_path: Path, tmp_path: Path
) -> None:
    ndjson = tmp_path / "ga_sessions_20170801.json"
    duckdb.sql(f"COPY (SELECT * FROM read_parquet('{ga_sample_path}')) TO '{ndjson}' (FORMAT json)")
    first = json.loads(ndjson.open(encoding="utf-8").readline())
    assert isinstance(first["hits"], list)  # really the nested export, one session per line
    from_json = ga360.load(ndjson, show_progress=False)
    pd.testing.assert_frame_equal(from_json.hits, loaded.hits)
    assert from_json.info == loaded.info


def test_prepare_data_command_on_the_sample(ga_sample_path: Path, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from scripts.prepare_data import run

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(
            "prepare_data",
            overrides=["data=ga360", f"data.path={ga_sample_path}", f"out_dir={tmp_path / 'ga'}"],
        )
    meta = run(cfg)
    out = tmp_path / "ga"
    assert sorted(p.name for p in out.iterdir()) == [
        "groups.parquet",
        "hits.parquet",
        "manifest.json",
        "meta.json",
        "pages.parquet",
        "transitions.parquet",
    ]
    # the manifest records the export it was made from, for the pipeline's freshness check
    (source,) = json.loads((out / "manifest.json").read_text())["source"]
    assert source["path"] == str(ga_sample_path.resolve())
    assert source["size"] == ga_sample_path.stat().st_size
    summary = meta["summary"]
    assert (summary["sessions"], summary["page_views"], summary["transactions"]) == (
        2_556,
        10_939,
        45,
    )
    assert summary["revenue"] == pytest.approx(8_902.00)
    assert summary["conversion_rate"] == pytest.approx(43 / 2_556)
    hits = pd.read_parquet(out / "hits.parquet")
    per_session = hits.drop_duplicates("session_id")["split"].value_counts().to_dict()
    assert per_session == {"train": 2_044, "valid": 256, "test": 256}
    pages = pd.read_parquet(out / "pages.parquet")
    assert pages["pageviews"].sum() == 10_939
    assert pages["page_id"].tolist() == list(range(len(pages)))
    assert pages.iloc[0]["page"] == "/home"  # the most viewed page gets id 0
    # The receipt page is credited only by transactions that follow an earlier view of it.
    assert set(pages.loc[pages["page"] == "/ordercompleted.html", "page_group"]) == {
        "order_completed"
    }
    transitions = pd.read_parquet(out / "transitions.parquet")
    row_sums = transitions.groupby(["level", "src"])["prob"].sum().to_numpy()
    np.testing.assert_allclose(row_sums, 1.0, atol=1e-12)
    # ENTRY row counts every session; EXIT is reached once per session
    page_level = transitions[transitions["level"] == "page"]
    assert page_level.loc[page_level["src"] == "ENTRY", "count"].sum() == 2_556
    assert page_level.loc[page_level["dst"] == "EXIT", "count"].sum() == 2_556
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["config"]["data"]["name"] == "ga360"
    assert on_disk["source_info"]["raw_page_paths"] == 314
