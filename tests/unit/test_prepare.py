"""The prepare stage: written files and summary, repeat collapsing, atomicity, bad raw hits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clickstream.catalog import CATALOG_COLUMNS
from clickstream.errors import ClickstreamError, ConfigError
from clickstream.prepare import collapse_repeats, prepare
from clickstream.schema import CANONICAL_COLUMNS, ENTRY, EXIT, LoadResult, coerce_raw_hits
from clickstream.splits import SplitConfig

T0 = pd.Timestamp("2024-01-01", tz="UTC")
OUTPUTS = (
    "hits.parquet",
    "pages.parquet",
    "groups.parquet",
    "transitions.parquet",
    "meta.json",
    "manifest.json",
)

# Each session: (page, revenue) per step; sessions start one hour apart in this order, so the
# default 0.8 / 0.1 / 0.1 split puts s0..s7 in train, s8 in valid, s9 in test.
SESSIONS: list[list[tuple[str, float]]] = [
    [("/a", 0), ("/b", 0), ("/c", 20)],  # s0: converts, 20
    [("/a", 0)],  # s1: bounce
    [("/b", 0), ("/b", 0), ("/a", 0)],  # s2: a reload of /b
    [("/c", 0)],  # s3: bounce
    [("/a", 0), ("/c", 0)],  # s4
    [("/b", 0), ("/d", 0)],  # s5
    [("/a", 0), ("/A/", 0)],  # s6: the same page twice once normalised
    [("/d", 0), ("/a", 5)],  # s7: converts, 5
    [("/e", 0), ("/e", 0), ("/e", 0)],  # s8 (valid)
    [("/f", 0), ("/a", 0)],  # s9 (test)
]


def raw_result(sessions: list[list[tuple[str, float]]] = SESSIONS) -> LoadResult:
    rows = []
    for i, views in enumerate(sessions):
        for step, (page, revenue) in enumerate(views):
            rows.append(
                {
                    "session_id": f"s{i}",
                    "visitor_id": f"v{i}",
                    "session_start": T0 + pd.Timedelta(hours=i),
                    "step": step,
                    "page_raw": page,
                    "hit_time": T0 + pd.Timedelta(hours=i, seconds=30 * step),
                    "time_on_page_s": 30.0 if step < len(views) - 1 else np.nan,
                    "revenue": float(revenue),
                    "is_transaction": revenue > 0,
                }
            )
    return LoadResult(
        hits=coerce_raw_hits(pd.DataFrame(rows)),
        source="test",
        files=["memory"],
        dropped={"sessions_without_page_views": 2},
        info={"note": "hand-made", "session_revenue": 25.0, "unplain": object()},
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def temp_folders(out_dir: Path) -> list[str]:
    return sorted(
        p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.tmp-")
    )


# --------------------------------------------------------------------------------------------
# Outputs and summary


def test_prepare_writes_outputs_with_hand_computed_summary(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    meta = prepare(raw_result(), out_dir, config={"seed": 3})
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUTS)
    assert json.loads((out_dir / "meta.json").read_text()) == json.loads(json.dumps(meta))
    assert temp_folders(out_dir) == []

    # 10 sessions, 21 page views on /a /b /c /d /e /f, 2 transactions worth 25,
    # bounces s1 and s3
    assert meta["summary"] == {
        "sessions": 10,
        "page_views": 21,
        "pages": 6,
        "page_groups": 6,
        "transactions": 2,
        "revenue": 25.0,
        "conversion_rate": pytest.approx(0.2),
        "bounce_rate": pytest.approx(0.2),
        "pages_per_session": pytest.approx(2.1),
    }
    assert meta["source"] == "test"
    assert meta["files"] == ["memory"]
    assert meta["dropped"] == {"sessions_without_page_views": 2}
    assert meta["source_info"] == {"note": "hand-made", "session_revenue": 25.0}
    assert meta["repeats"] == "keep"
    assert "repeats_collapsed" not in meta
    assert meta["stats_split"] == "all"
    assert meta["config"] == {"seed": 3}
    assert "git_commit" in meta and "created_utc" in meta
    assert meta["pages"] == {
        "raw_pages": 7,
        "pages": 6,
        "grouping": "rules",
        "pages_after_folding": 6,
        "page_groups": 6,
    }
    assert meta["dataset"] == "memory"
    assert meta["page_value"] == {"source": "revenue", "revenue_timing": "with_view"}
    assert meta["rewards"] == {
        "supported": ["page_value", "revenue", "engagement", "pageviews"],
        "missing": {},
        "default": "page_value",
    }
    assert meta["notices"] == []
    assert {k: meta["split"][k]["sessions"] for k in ("train", "valid", "test")} == {
        "train": 8,
        "valid": 1,
        "test": 1,
    }
    assert meta["split"]["valid"]["first_session_start"] == (T0 + pd.Timedelta(hours=8)).isoformat()

    hits = pd.read_parquet(out_dir / "hits.parquet")
    assert list(hits.columns) == list(CANONICAL_COLUMNS)
    assert len(hits) == 21
    assert hits.loc[hits["session_id"] == "s6", "page"].tolist() == ["/a", "/a"]
    assert hits.drop_duplicates("session_id").set_index("session_id")["split"].to_dict() == {
        **{f"s{i}": "train" for i in range(8)},
        "s8": "valid",
        "s9": "test",
    }

    pages = pd.read_parquet(out_dir / "pages.parquet")
    assert list(pages.columns) == list(CATALOG_COLUMNS)
    # /a: s0 s1 s2 s4 s6 (x2) s7 s9 = 8; /b: s0 s2 (x2) s5 = 4; /c 3; /e 3; /d 2; /f 1
    assert pages[["page", "pageviews"]].values.tolist() == [
        ["/a", 8],
        ["/b", 4],
        ["/c", 3],
        ["/e", 3],
        ["/d", 2],
        ["/f", 1],
    ]
    assert pages["page_group"].tolist() == ["/a", "/b", "/c", "/e", "/d", "/f"]

    groups = pd.read_parquet(out_dir / "groups.parquet")
    assert "group_id" in groups.columns and "page" not in groups.columns
    assert groups["pageviews"].sum() == 21

    transitions = pd.read_parquet(out_dir / "transitions.parquet")
    assert list(transitions.columns) == ["level", "src", "dst", "count", "prob"]
    assert set(transitions["level"]) == {"page", "group"}
    sums = transitions.groupby(["level", "src"])["prob"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)
    page_level = transitions[transitions["level"] == "page"]
    entry = page_level[page_level["src"] == ENTRY].set_index("dst")["count"].to_dict()
    assert entry == {"/a": 4, "/b": 2, "/c": 1, "/d": 1, "/e": 1, "/f": 1}
    assert page_level[page_level["src"] == "/e"][["dst", "count"]].values.tolist() == [
        ["/e", 2],
        [EXIT, 1],
    ]


def test_repeats_collapse_is_recorded_and_changes_the_figures(tmp_path: Path) -> None:
    meta = prepare(raw_result(), tmp_path / "run", repeats="collapse")
    assert meta["repeats"] == "collapse"
    # s2 /b /b, s6 /a /A/ (the same page once normalised) and s8 /e /e /e lose 1 + 1 + 2 views
    assert meta["repeats_collapsed"] == 4
    assert meta["summary"]["page_views"] == 17
    assert meta["summary"]["bounce_rate"] == pytest.approx(0.4)  # s1 s3 s6 s8
    assert meta["summary"]["revenue"] == 25.0
    on_disk = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert on_disk["repeats"] == "collapse"
    hits = pd.read_parquet(tmp_path / "run" / "hits.parquet")
    assert hits.loc[hits["session_id"] == "s8", ["page", "step"]].values.tolist() == [["/e", 0]]
    assert hits.loc[hits["session_id"] == "s2", "step"].tolist() == [0, 1]
    transitions = pd.read_parquet(tmp_path / "run" / "transitions.parquet")
    page_level = transitions[transitions["level"] == "page"]
    loops = page_level[(page_level["src"] == page_level["dst"]) & (page_level["src"] != EXIT)]
    assert loops.empty


def test_bad_repeats_option_raises(tmp_path: Path) -> None:
    with pytest.raises(ClickstreamError, match="repeats must be one of"):
        prepare(raw_result(), tmp_path / "run", repeats="drop")
    assert not (tmp_path / "run").exists()


def test_stats_split_train_describes_only_train_sessions(tmp_path: Path) -> None:
    meta = prepare(raw_result(), tmp_path / "run", stats_split="train")
    assert meta["stats_split"] == "train"
    hits = pd.read_parquet(tmp_path / "run" / "hits.parquet")
    assert len(hits) == 21  # the hits table holds every split
    train = hits[hits["split"] == "train"]
    pages = pd.read_parquet(tmp_path / "run" / "pages.parquet")
    assert pages["pageviews"].sum() == len(train) == 16
    # /e (valid) and /f (test) are not described, but listed (the vocabulary) with no views
    assert pages.set_index("page")["pageviews"].to_dict() == {
        "/a": 7,
        "/b": 4,
        "/c": 3,
        "/d": 2,
        "/e": 0,
        "/f": 0,
    }
    groups = pd.read_parquet(tmp_path / "run" / "groups.parquet")
    assert groups["pageviews"].sum() == 16
    transitions = pd.read_parquet(tmp_path / "run" / "transitions.parquet")
    entry = transitions[(transitions["level"] == "page") & (transitions["src"] == ENTRY)]
    assert entry["count"].sum() == 8
    assert not ({"/e", "/f"} & (set(transitions["src"]) | set(transitions["dst"])))


def test_stats_split_train_makes_a_loadable_dataset(tmp_path: Path, capsys) -> None:
    # the vocabulary is every split's pages; /e (valid only) and /f (test only) have no train
    # view: page value 0, revenue 0, unknown time (the engagement reward gives the mean)
    from envs.rewards import reward_from_catalog
    from envs.sequences import load_prepared

    meta = prepare(raw_result(), tmp_path / "run", stats_split="train")
    data = load_prepared(tmp_path / "run")
    assert set(data.vocab.pages) == {"/a", "/b", "/c", "/d", "/e", "/f"}
    assert {name: len(seqs) for name, seqs in data.splits.items()} == {
        "train": 8,
        "valid": 1,
        "test": 1,
    }
    catalog = data.catalog().set_index("page")
    assert catalog.loc[["/e", "/f"], "unique_pageviews"].tolist() == [0, 0]
    assert catalog.loc[["/e", "/f"], "avg_time_on_page_s"].isna().all()
    pages = list(data.vocab.pages)
    unseen = [pages.index("/e"), pages.index("/f")]
    value = reward_from_catalog("page_value", data.catalog(), pages).per_page.numpy()
    revenue = reward_from_catalog("revenue", data.catalog(), pages).per_page.numpy()
    time = reward_from_catalog("engagement", data.catalog(), pages).per_page.numpy()
    assert value[unseen].tolist() == [0.0, 0.0] and revenue[unseen].tolist() == [0.0, 0.0]
    assert time[unseen] == pytest.approx([30.0, 30.0])  # the mean of the known pages' times
    said = [n for n in meta["notices"] if n.startswith("stats_split=train")]
    assert len(said) == 1 and "2 of 6 pages" in said[0] and "(2 of 6 page groups)" in said[0]
    assert said[0] in capsys.readouterr().err


def test_ga4_revenue_timing_credits_the_page_a_purchase_followed(tmp_path: Path) -> None:
    # the loader's info says when the revenue on a hit was paid; the catalog follows it
    raw = raw_result()
    raw.info["revenue_timing"] = "after_view"
    meta = prepare(raw, tmp_path / "run")
    assert meta["page_value"] == {"source": "revenue", "revenue_timing": "after_view"}
    value = pd.read_parquet(tmp_path / "run" / "pages.parquet").set_index("page")["page_value"]
    # s0 /a /b /c + 20 after /c; s7 /d /a + 5 after /a: /c (viewed in s0 s3 s4) now gets 20
    assert value["/c"] == pytest.approx(20 / 3)
    assert value["/d"] == pytest.approx(5 / 2)  # s5 s7
    plain = prepare(raw_result(), tmp_path / "plain")["page_value"]
    assert plain["revenue_timing"] == "with_view"
    assert pd.read_parquet(tmp_path / "plain" / "pages.parquet").set_index("page").loc[
        "/c", "page_value"
    ] == pytest.approx(0.0)


def test_extra_outputs_written_with_the_rest(tmp_path: Path) -> None:
    def extra(out, meta, hits) -> None:
        out.write_json("truth.json", {"x": 1})
        meta["extra"] = "yes"
        meta["hits_seen"] = len(hits)

    def loader_extra(out, meta, hits) -> None:
        meta["loader_extra_first"] = "extra" not in meta

    raw = raw_result()
    raw.extra_outputs = loader_extra
    meta = prepare(raw, tmp_path / "run", extra_outputs=extra)
    assert meta["extra"] == "yes"
    assert meta["loader_extra_first"] is True
    assert meta["hits_seen"] == meta["summary"]["page_views"]
    assert json.loads((tmp_path / "run" / "truth.json").read_text()) == {"x": 1}
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["extra"] == "yes"


# --------------------------------------------------------------------------------------------
# Atomicity


@pytest.fixture
def previous_run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out_dir = tmp_path / "run"
    prepare(raw_result(SESSIONS[:5]), out_dir)
    return out_dir, snapshot(out_dir)


def test_failure_in_extra_outputs_leaves_old_outputs(previous_run) -> None:
    out_dir, before = previous_run

    def boom(out, meta, hits) -> None:
        out.write_json("half_written.json", {})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        prepare(raw_result(), out_dir, extra_outputs=boom)
    assert snapshot(out_dir) == before
    assert temp_folders(out_dir) == []


def test_invalid_stats_split_leaves_old_outputs(previous_run) -> None:
    out_dir, before = previous_run
    with pytest.raises(ClickstreamError, match="stats_split"):
        prepare(raw_result(), out_dir, stats_split="training")
    assert snapshot(out_dir) == before
    assert temp_folders(out_dir) == []


def test_empty_stats_split_leaves_old_outputs(previous_run) -> None:
    out_dir, before = previous_run
    with pytest.raises(ClickstreamError, match="stats_split='valid' holds no sessions"):
        prepare(raw_result(), out_dir, split=SplitConfig(0.9, 0.0, 0.1), stats_split="valid")
    assert snapshot(out_dir) == before
    assert temp_folders(out_dir) == []


@pytest.mark.parametrize(
    ("sessions", "split", "message"),
    [
        (  # one session: floor(0.8) = 0 train, floor(0.9) = 0 valid, 1 test
            SESSIONS[:1],
            SplitConfig(),
            "split.train=0.8, split.valid=0.1, split.test=0.1 leave the train split with no "
            "sessions (1 session: train 0, valid 0, test 1); the train and test splits need "
            "at least one session each: raise split.train or prepare more sessions",
        ),
        (
            SESSIONS,
            SplitConfig(0.9, 0.1, 0.0),
            "split.train=0.9, split.valid=0.1, split.test=0.0 leave the test split with no "
            "sessions (10 sessions: train 9, valid 1, test 0); the train and test splits need "
            "at least one session each: raise split.test or prepare more sessions",
        ),
    ],
)
def test_a_split_later_stages_cannot_use_is_refused_before_publishing(
    previous_run, sessions: list, split: SplitConfig, message: str
) -> None:
    out_dir, before = previous_run
    with pytest.raises(ConfigError) as info:
        prepare(raw_result(sessions), out_dir, split=split)
    assert str(info.value) == message
    assert snapshot(out_dir) == before
    assert temp_folders(out_dir) == []


def test_an_empty_valid_split_is_published_with_a_notice(tmp_path: Path, capsys) -> None:
    # train and test are what every stage needs; only the visitor model's early stopping
    # needs valid, and train_simulator refuses the data itself
    meta = prepare(raw_result(), tmp_path / "run", split=SplitConfig(0.9, 0.0, 0.1))
    expected = (
        "split.train=0.9, split.valid=0.0, split.test=0.1 leave the valid split with no "
        "sessions (10 sessions: train 9, valid 0, test 1); scripts/train_simulator.py needs "
        "some for early stopping and will refuse these data: raise split.valid or prepare "
        "more sessions to train a visitor model"
    )
    assert expected in meta["notices"]
    assert f"note: {expected}" in capsys.readouterr().err
    assert (tmp_path / "run" / "manifest.json").is_file()


def test_bad_input_leaves_old_outputs(previous_run) -> None:
    out_dir, before = previous_run
    raw = raw_result()
    raw.hits.loc[4, "revenue"] = -1.0
    with pytest.raises(ClickstreamError, match="revenue"):
        prepare(raw, out_dir)
    assert snapshot(out_dir) == before
    assert temp_folders(out_dir) == []


def test_successful_rerun_replaces_outputs(previous_run) -> None:
    out_dir, before = previous_run
    prepare(raw_result(), out_dir)
    after = snapshot(out_dir)
    assert set(after) == set(before)
    assert after["hits.parquet"] != before["hits.parquet"]
    assert json.loads(after["meta.json"])["summary"]["sessions"] == 10
    assert temp_folders(out_dir) == []


# --------------------------------------------------------------------------------------------
# collapse_repeats


def canonical_rows(
    sessions: dict[str, list[tuple[str, float, float]]],
) -> pd.DataFrame:
    """Hits with a ``page`` column; each view is ``(page, time_on_page_s, revenue)``."""
    rows = []
    for i, (sid, views) in enumerate(sessions.items()):
        for step, (page, top, revenue) in enumerate(views):
            rows.append(
                {
                    "session_id": sid,
                    "visitor_id": "v",
                    "session_start": T0 + pd.Timedelta(hours=i),
                    "step": step,
                    "page_raw": page,
                    "hit_time": T0 + pd.Timedelta(hours=i, seconds=step),
                    "time_on_page_s": top,
                    "revenue": revenue,
                    "is_transaction": revenue > 0,
                }
            )
    df = coerce_raw_hits(pd.DataFrame(rows))
    df["page"] = df["page_raw"]
    df["page_group"] = "g"
    return df


def test_collapse_repeats_hand_made_session() -> None:
    nan = np.nan
    hits = canonical_rows(
        {
            # A A B B B A, then a session starting on the page the first one ended on
            "s1": [
                ("A", 1, 0),
                ("A", 2, 0),
                ("B", 3, 10),
                ("B", nan, 0),
                ("B", 4, 5),
                ("A", nan, 0),
            ],
            "s2": [("A", 2, 0), ("A", 3, 0), ("C", nan, 0)],
        }
    )
    hits.index = hits.index + 100  # a non-default index must not matter
    out = collapse_repeats(hits)
    assert out["session_id"].tolist() == ["s1", "s1", "s1", "s2", "s2"]
    assert out["page"].tolist() == ["A", "B", "A", "A", "C"]
    assert out["step"].tolist() == [0, 1, 2, 0, 1]
    top = out["time_on_page_s"].tolist()
    assert top[0] == 3.0  # 1 + 2
    assert np.isnan(top[1])  # one part unknown
    assert np.isnan(top[2])
    assert top[3] == 5.0
    assert np.isnan(top[4])
    assert out["revenue"].tolist() == [0.0, 15.0, 0.0, 0.0, 0.0]
    assert out["is_transaction"].tolist() == [False, True, False, False, False]
    # the merged view keeps its first view's time
    assert out["hit_time"].tolist()[1] == T0 + pd.Timedelta(seconds=2)
    assert out["revenue"].sum() == hits["revenue"].sum()
    assert list(out.columns) == list(hits.columns)


def test_collapse_repeats_without_repeats_changes_nothing() -> None:
    hits = canonical_rows({"s1": [("A", 1, 0), ("B", np.nan, 7)], "s2": [("B", np.nan, 0)]})
    out = collapse_repeats(hits)
    pd.testing.assert_frame_equal(out, hits.reset_index(drop=True))


# --------------------------------------------------------------------------------------------
# Bad raw hits


def bad_raw(mutate) -> LoadResult:
    raw = raw_result()
    mutate(raw.hits)
    return raw


def swap_rows(df: pd.DataFrame, i: int, j: int) -> None:
    a, b = df.loc[i].copy(), df.loc[j].copy()
    df.loc[i], df.loc[j] = b, a


@pytest.mark.parametrize(
    ("mutate", "column", "row", "words"),
    [
        (
            lambda h: h.__setitem__("revenue", h["revenue"].where(h.index != 4, -2.0)),
            "revenue",
            4,
            "revenue",
        ),
        (
            lambda h: h.__setitem__("revenue", h["revenue"].where(h.index != 6, np.nan)),
            "revenue",
            6,
            "missing",
        ),
        (
            lambda h: h.__setitem__("revenue", h["revenue"].where(h.index != 7, np.inf)),
            "revenue",
            7,
            "finite",
        ),
        # revenue 3.0 on row 3 (s1's /a), which is not a transaction
        (
            lambda h: h.__setitem__("revenue", h["revenue"].where(h.index != 3, 3.0)),
            "is_transaction",
            3,
            "revenue on a hit that is not a transaction",
        ),
        # rows 3 (s1) and 4 (s2 step 0) swapped: s2 is split around s1
        (lambda h: swap_rows(h, 3, 4), "session_id", 5, "contiguous"),
        (
            lambda h: h.__setitem__("step", h["step"].where(h.index != 2, 5)),
            "step",
            2,
            "expected 2, got 5",
        ),
        (lambda h: h.__setitem__("step", h["step"] + 1), "step", 0, "expected 0, got 1"),
        (
            lambda h: h.__setitem__(
                "time_on_page_s", h["time_on_page_s"].where(h.index != 0, -1.0)
            ),
            "time_on_page_s",
            0,
            ">= 0",
        ),
        # absurd numbers (issue 17): a revenue of 1e308 would sum to inf in meta.json
        (
            lambda h: (
                h.__setitem__("revenue", h["revenue"].where(h.index != 2, 1e308)),
                h.__setitem__("is_transaction", h["is_transaction"] | (h.index == 2)),
            ),
            "revenue",
            2,
            "at most 1e+12",
        ),
        (
            lambda h: h.__setitem__("value", h["value"].where(h.index != 4, np.inf)),
            "value",
            4,
            "finite",
        ),
        (
            lambda h: h.__setitem__("time_on_page_s", h["time_on_page_s"].where(h.index != 1, 4e9)),
            "time_on_page_s",
            1,
            "at most 1e+09 seconds",
        ),
        (
            lambda h: h.__setitem__(
                "session_start", h["session_start"].where(h.index != 1, T0 - pd.Timedelta(days=1))
            ),
            "session_start",
            1,
            "differs",
        ),
    ],
)
def test_bad_raw_hits_raise_naming_column_and_row(
    tmp_path: Path, mutate, column: str, row: int, words: str
) -> None:
    with pytest.raises(ClickstreamError) as info:
        prepare(bad_raw(mutate), tmp_path / "run")
    err = info.value
    assert err.column == column
    assert err.row == row
    message = str(err)
    assert f"column '{column}'" in message
    assert f"row {row}" in message
    assert words in message
    assert not (tmp_path / "run").exists()
    assert temp_folders(tmp_path / "run") == []


def test_missing_required_column_raises(tmp_path: Path) -> None:
    raw = raw_result()
    raw.hits = raw.hits.drop(columns=["is_transaction"])
    with pytest.raises(ClickstreamError, match="column 'is_transaction'"):
        prepare(raw, tmp_path / "run")


def test_value_column_defines_page_value_without_revenue(tmp_path: Path) -> None:
    from clickstream import csv as csv_loader

    text = (
        "sid,item,ts,price\n"
        "a,1,2020-01-01T00:00:00Z,10\na,2,2020-01-01T00:00:30Z,30\n"
        "b,1,2020-01-02T00:00:00Z,12\nb,3,2020-01-02T00:01:00Z,\n"
    )
    (tmp_path / "shop.csv").write_text(text)
    raw = csv_loader.load(
        tmp_path / "shop.csv", columns="session=sid,page=item,time=ts,value=price"
    )
    meta = prepare(raw, tmp_path / "out")
    pages = pd.read_parquet(tmp_path / "out" / "pages.parquet").set_index("page")
    # the page's mean value over the views where it is known; unknown everywhere: 0
    assert pages["value"].to_dict() == pytest.approx(
        {"/1": 11.0, "/2": 30.0, "/3": np.nan}, nan_ok=True
    )
    assert pages["page_value"].to_dict() == {"/1": 11.0, "/2": 30.0, "/3": 0.0}
    assert meta["page_value"] == {"source": "value", "column": "price"}
    assert meta["rewards"]["default"] == "page_value"
    assert meta["notices"][0].startswith(
        "page value: the data records no revenue, so a page's value is the mean of the value "
        "column 'price'"
    )
    # GA's definition on request: no revenue, so 0 everywhere
    meta = prepare(raw, tmp_path / "ga", page_value="revenue")
    assert pd.read_parquet(tmp_path / "ga" / "pages.parquet")["page_value"].eq(0).all()
    assert meta["rewards"]["default"] == "engagement"
    # value asked for where there is none
    no_value = csv_loader.load(
        tmp_path / "shop.csv", columns="session=sid,page=item,time=ts,value=null"
    )
    with pytest.raises(ClickstreamError, match=r"data\.page_value=value needs a value column"):
        prepare(no_value, tmp_path / "none", page_value="value")


def test_dataset_name_is_the_data_loaded(tmp_path: Path) -> None:
    from clickstream.prepare import dataset_name
    from scripts.evaluate import dataset_title

    def named(*files: str, info: dict | None = None) -> str:
        return dataset_name(
            LoadResult(hits=pd.DataFrame(), source="csv", files=list(files), info=info or {})
        )

    assert named("/x/ga_sample_20170801.parquet") == "ga_sample_20170801"
    assert named("/x/clicks.csv.gz") == "clicks" and named("/x/msnbc990928.zip") == "msnbc990928"
    assert named("/x/ga360/d1.json", "/x/ga360/d2.json") == "ga360"
    assert named("/x/a.csv", "/y/b.csv", "/z/c.csv") == "a+2"
    assert named(info={"dataset_name": "synthetic_items_600p"}) == "synthetic_items_600p"
    assert named() == "csv"
    (tmp_path / "meta.json").write_text('{"dataset": "shop"}')
    assert dataset_title(tmp_path, "ga_sample") == "shop"
    assert dataset_title(tmp_path / "nowhere", "ga_sample") == "ga_sample"
