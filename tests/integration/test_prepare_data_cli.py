"""The prepare_data command on every data config, and the synthetic store's extra outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from clickstream.synthetic import SyntheticStore
from scripts.prepare_data import run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def prepared(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("prepare_data", overrides=overrides)
    return run(cfg)


@pytest.mark.parametrize("mode", ["intent", "markov"])
def test_synthetic_writes_true_model_and_bayes_loss(mode: str, tmp_path: Path) -> None:
    out = tmp_path / mode
    meta = prepared(
        [
            "data=synthetic",
            f"data.mode={mode}",
            "data.n_sessions=3000",
            "data.n_pages=120",
            f"out_dir={out}",
        ]
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "groups.parquet",
        "hits.parquet",
        "manifest.json",
        "meta.json",
        "pages.parquet",
        "session_intents.parquet",
        "transitions.parquet",
        "true_model.json",
        "true_model.npz",
    ]
    assert meta["summary"]["sessions"] == 3000
    assert meta["summary"]["pages"] <= 120
    assert meta["split"]["test"]["sessions"] == 300

    # the recorded Bayes test log-loss is the store's own loss on the test split
    store = SyntheticStore.load(out / "true_model")
    assert store.mode == mode and store.n_pages == 120
    hits = pd.read_parquet(out / "hits.parquet")
    test = hits[hits["split"] == "test"]
    recorded = json.loads((out / "meta.json").read_text())["true_model"]
    assert recorded["bayes_log_loss"]["test"] == pytest.approx(store.predictive_log_loss(test))
    assert recorded["predicted_steps"]["test"] == len(test)  # one step after each page view
    assert 1.0 < recorded["bayes_log_loss"]["test"] < 4.0

    # the latent intents cover every session once
    intents = pd.read_parquet(out / "session_intents.parquet")
    assert len(intents) == 3000
    assert set(intents["session_id"]) == set(hits["session_id"])
    expected = {"intent": {"browse", "research", "buy"}, "markov": {"markov"}}[mode]
    assert set(intents["intent"].astype(str)) <= expected


def test_synthetic_same_seed_same_bytes(tmp_path: Path) -> None:
    args = ["data=synthetic", "data.n_sessions=500", "data.n_pages=60"]
    prepared([*args, f"out_dir={tmp_path / 'a'}"])
    prepared([*args, f"out_dir={tmp_path / 'b'}"])
    for name in ("hits.parquet", "true_model.npz", "transitions.parquet", "pages.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_ga4_config_on_the_sample(ga4_sample_path: Path, tmp_path: Path) -> None:
    meta = prepared(["data=ga4", f"data.path={ga4_sample_path}", f"out_dir={tmp_path / 'ga4'}"])
    assert meta["summary"]["page_views"] == 7_498
    assert meta["summary"]["revenue"] == pytest.approx(7_510.0)
    assert meta["dropped"]["purchases_without_page_view"] == 526
    assert meta["page_value"] == {"source": "revenue", "revenue_timing": "after_view"}


def test_ga4_page_value_credits_every_page_viewed_before_the_purchase(
    ga4_sample_path: Path, tmp_path: Path
) -> None:
    # GA's definition, computed from the raw events with DuckDB: each purchase's revenue goes
    # once to every page viewed in its session at or before it, over the page's unique
    # pageviews. Before the GA4 catalog credited the page view a purchase followed, only
    # 1,225 of these 8,735 USD of credit reached a page value (10 pages instead of 41), and
    # /basket.html's value was 0.13 instead of 4.19.
    out = tmp_path / "ga4"
    prepared(["data=ga4", f"data.path={ga4_sample_path}", f"out_dir={out}"])
    hits = pd.read_parquet(out / "hits.parquet", columns=["page_raw", "page"])
    to_page = hits.drop_duplicates("page_raw")  # noqa: F841 (read by DuckDB)
    expected = duckdb.sql(
        f"""
        WITH e AS (
            SELECT user_pseudo_id || '-' ||
                   [p.value.int_value FOR p IN event_params IF p.key = 'ga_session_id'][1] AS sid,
                   [p.value.string_value FOR p IN event_params IF p.key = 'page_location'][1]
                       AS loc,
                   event_timestamp AS t, event_name,
                   ecommerce.purchase_revenue_in_usd AS rev,
                   row_number() OVER () AS id
            FROM read_parquet('{ga4_sample_path}')
        ),
        pv AS (SELECT sid, t, m.page FROM e JOIN to_page m ON m.page_raw = e.loc
               WHERE event_name = 'page_view'),
        pu AS (SELECT id, sid, t, rev FROM e WHERE event_name = 'purchase'),
        credit AS (SELECT DISTINCT pu.id, pv.page, pu.rev FROM pu JOIN pv
                   ON pv.sid = pu.sid AND pv.t <= pu.t),
        upv AS (SELECT page, count(DISTINCT sid) AS upv FROM pv GROUP BY page)
        SELECT upv.page, coalesce(sum(credit.rev), 0) AS credited, any_value(upv.upv) AS upv
        FROM upv LEFT JOIN credit USING (page) GROUP BY upv.page
        """
    ).df()
    catalog = pd.read_parquet(out / "pages.parquet").set_index("page")
    expected = expected.set_index("page").loc[catalog.index]
    np.testing.assert_array_equal(catalog["unique_pageviews"], expected["upv"])
    np.testing.assert_allclose(catalog["page_value"], expected["credited"] / expected["upv"])
    credited = catalog["page_value"] * catalog["unique_pageviews"]
    assert credited.sum() == pytest.approx(8_735.0)
    assert int((catalog["page_value"] > 0).sum()) == 41
    assert catalog.loc["/basket.html", "page_value"] == pytest.approx(1_756.0 / 419)


def test_ga360_stats_split_train_is_loadable(ga_sample_path: Path, tmp_path: Path) -> None:
    # the reward table from the train sessions only; the vocabulary from every split (12 pages
    # of the sample day are viewed in valid or test sessions only)
    from envs.rewards import reward_from_catalog
    from envs.sequences import load_prepared

    out = tmp_path / "ga360_train"
    meta = prepared(
        ["data=ga360", f"data.path={ga_sample_path}", "stats_split=train", f"out_dir={out}"]
    )
    data = load_prepared(out)
    catalog = data.catalog()
    assert data.vocab.n_pages == len(catalog) == meta["summary"]["pages"] == 308
    unseen = catalog["unique_pageviews"].to_numpy() == 0
    assert int(unseen.sum()) == 12
    assert any(n.startswith("stats_split=train: 12 of 308 pages") for n in meta["notices"])
    value = reward_from_catalog("page_value", catalog, data.vocab.pages).per_page.numpy()
    assert (value[catalog["page_id"].to_numpy()[unseen]] == 0).all()
    hits = pd.read_parquet(out / "hits.parquet", columns=["split"])
    assert catalog["pageviews"].sum() == int((hits["split"] == "train").sum())


def test_csv_config_with_a_column_mapping(tmp_path: Path) -> None:
    src = tmp_path / "clicks.csv"
    src.write_text(
        "visitor,url,ts,amount\n"
        "v1,/home,2020-01-01T10:00:00Z,0\n"
        "v1,/shop/item?id=7,2020-01-01T10:00:30Z,0\n"
        "v1,/basket.html,2020-01-01T10:01:00Z,25.5\n"
        "v1,/home,2020-01-01T12:00:00Z,0\n"  # two hours later: a new session
        "v2,/home/,2020-01-01T10:05:00Z,0\n",
        encoding="utf-8",
    )
    meta = prepared(
        [
            "data=csv",
            f"data.path={src}",
            "+data.loader.columns={visitor_id: visitor, page: url, timestamp: ts, revenue: amount}",
            f"out_dir={tmp_path / 'out'}",
        ]
    )
    s = meta["summary"]
    assert (s["sessions"], s["page_views"], s["pages"], s["transactions"]) == (3, 5, 3, 1)
    assert s["revenue"] == pytest.approx(25.5)
    hits = pd.read_parquet(tmp_path / "out" / "hits.parquet")
    assert sorted(hits["session_id"].unique()) == ["v1#0", "v1#1", "v2#0"]


def test_msnbc_config_keeps_category_names(tmp_path: Path) -> None:
    seq = tmp_path / "tiny.seq"
    seq.write_text(
        "% Different categories found in input file:\n\n"
        "frontpage news tech\n\n"
        "% Sequences:\n\n"
        "1 1 2\n3\n2 3 1 1\n",
        encoding="utf-8",
    )
    meta = prepared(["data=msnbc", f"data.path={seq}", f"out_dir={tmp_path / 'out'}"])
    pages = pd.read_parquet(tmp_path / "out" / "pages.parquet")
    assert sorted(pages["page"]) == ["frontpage", "news", "tech"]
    assert meta["summary"]["page_views"] == 8
    probs = pd.read_parquet(tmp_path / "out" / "transitions.parquet")
    sums = probs.groupby(["level", "src"])["prob"].sum().to_numpy()
    np.testing.assert_allclose(sums, 1.0)


def test_command_line_reports_a_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("session_id,page\ns1,/a\ns1\n", encoding="utf-8")  # ragged row on line 3
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "prepare_data.py"),
            "data=csv",
            f"data.path={bad}",
            f"out_dir={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2
    assert "bad.csv" in proc.stderr and "line 3" in proc.stderr
    assert not out.exists()


def test_csv_without_a_path_names_data_path(tmp_path: Path) -> None:
    from clickstream.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        prepared(["data=csv", f"out_dir={tmp_path / 'out'}"])
    assert str(err.value) == (
        "data.path is required with data=csv: the export's file, folder or glob (e.g. "
        "data.path=clicks.csv; docs/bring_your_own_data.md)"
    )
    assert not (tmp_path / "out").exists()


def test_an_out_dir_that_is_not_a_prepared_dataset_is_refused_before_loading(tmp_path: Path):
    from clickstream.errors import RunFolderError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("important")
    # the export does not exist: the refusal comes first, before the loader looks for it
    with pytest.raises(RunFolderError, match="not replaced by this prepare_data output"):
        prepared(["data=csv", f"data.path={tmp_path / 'nothing.csv'}", f"out_dir={out}"])
    assert (out / "notes.txt").read_text() == "important"
