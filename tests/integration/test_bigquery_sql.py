"""The shipped BigQuery SQL (``clickstream/sql/*_bigquery.sql``), run by DuckDB on the shared
GA exports, gives the flat tables the loaders read: loaded, they equal the raw exports loaded.

DuckDB runs the files with a handful of spelling changes only (the table, ``STRING``, the
alias of ``UNNEST``, and ``CONCAT``, which is NULL when any part is in BigQuery and skips NULL
parts in DuckDB); every clause that selects, filters or computes is BigQuery's as shipped,
including the partition filter on ``_TABLE_SUFFIX`` (each table's suffix is its date).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from clickstream import ga4, ga360

pytestmark = pytest.mark.integration


def bigquery_in_duckdb(sql: str, table: str, source: str) -> str:
    """``sql`` (BigQuery dialect) as DuckDB runs it: ``table`` read from ``source``."""
    assert f"`{table}`" in sql, table
    sql = sql.replace(f"`{table}`", f"({source})")
    sql = re.sub(r"\bAS STRING\)", "AS VARCHAR)", sql)
    # BigQuery: UNNEST(x) AS h is a row alias; DuckDB names the column: AS t(h)
    sql = re.sub(r"UNNEST\(([^()]*)\) AS (\w+)", r"UNNEST(\1) AS _unnest(\2)", sql)
    return sql.replace("CONCAT(", "bq_concat(")


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # BigQuery's CONCAT: NULL as soon as one part is NULL (DuckDB's concat skips NULLs)
    con.execute("CREATE MACRO bq_concat(a, b, c) AS a || b || c")
    return con


def _sql(name: str) -> str:
    return resources.files("clickstream").joinpath(f"sql/{name}").read_text(encoding="utf-8")


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def test_ga360_bigquery_sql_gives_the_flat_table_of_the_export(
    ga_sample_path: Path, tmp_path: Path
) -> None:
    con = _connect()
    # the daily table ga_sessions_20170801: its _TABLE_SUFFIX is its date
    day = f"SELECT *, date AS _TABLE_SUFFIX FROM read_parquet({_quoted(ga_sample_path)})"
    sql = bigquery_in_duckdb(
        _sql("ga360_flatten_bigquery.sql"),
        "bigquery-public-data.google_analytics_sample.ga_sessions_*",
        day,
    )
    flat = con.sql(sql).df()
    assert list(flat.columns) == list(ga360.FLAT_COLUMNS)
    # the figures of ../shared/data/README.md: page views only, hit-level revenue
    assert len(flat) == 10_939
    assert flat["session_id"].nunique() == 2_556
    assert flat["page_path"].nunique() == 314
    assert int(flat["is_transaction"].sum()) == 45
    assert flat["revenue"].sum() == pytest.approx(8_902.00)
    # the same rows as the loader's own flattening (DuckDB dialect), in BigQuery's order
    own = con.sql(
        f"{ga360.flatten_sql(f'read_parquet({_quoted(ga_sample_path)})')} "
        "ORDER BY session_start_s, session_id, hit_number"
    ).df()
    # the one difference: revenue on a hit without a transaction is 0 in BigQuery's (IFNULL),
    # null in DuckDB's (so that a revenue that is not a number can be refused); both load as 0
    assert own.loc[~own["is_transaction"], "revenue"].isna().all()
    own["revenue"] = own["revenue"].fillna(0.0)
    pd.testing.assert_frame_equal(flat, own, check_dtype=False)
    # saved as BigQuery would (Parquet), it loads to the hits of the raw export
    path = tmp_path / "bigquery_result.parquet"
    flat.to_parquet(path)
    via_sql = ga360.load(path, show_progress=False).hits
    direct = ga360.load(ga_sample_path, show_progress=False).hits
    pd.testing.assert_frame_equal(via_sql, direct)

    # the partition filter reads only the days asked for: a range without this day is empty
    other_days = sql.replace("'20160801' AND '20170801'", "'20160801' AND '20170731'")
    assert other_days != sql
    assert con.sql(f"SELECT count(*) FROM ({other_days})").fetchall() == [(0,)]


def test_ga4_bigquery_sql_gives_the_flat_table_of_the_export(
    ga4_sample_path: Path, tmp_path: Path
) -> None:
    con = _connect()
    events = f"SELECT *, event_date AS _TABLE_SUFFIX FROM read_parquet({_quoted(ga4_sample_path)})"
    sql = bigquery_in_duckdb(_sql("ga4_bigquery.sql"), "project.dataset.events_*", events)
    flat = con.sql(sql).df()
    # the figures of ../shared/data/README.md: 7,498 page views, 624 purchases of 41,529 USD
    assert (flat["event_name"] == "page_view").sum() == 7_498
    purchases = flat[flat["event_name"] == "purchase"]
    assert len(purchases) == 624
    assert purchases["revenue"].sum() == pytest.approx(41_529, abs=0.5)
    assert flat.loc[flat["event_name"] == "page_view", "revenue"].isna().all()
    path = tmp_path / "bigquery_result.parquet"
    flat.to_parquet(path)
    via_sql = ga4.load(path, show_progress=False)
    direct = ga4.load(ga4_sample_path, show_progress=False)
    pd.testing.assert_frame_equal(via_sql.hits, direct.hits)
    assert via_sql.dropped == direct.dropped
