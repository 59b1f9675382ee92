"""Real exports in, without silent damage (issue 18): each failure a new user met, as a fixture.

Every case ends in a correct table or an error naming the file, column or key and the fix;
none trains on a collapsed or mis-read table. The item logs are written from the synthetic
item-level store (``data.mode=items``): numeric item ids, no path hierarchy, no revenue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clickstream.errors import ClickstreamError
from clickstream.prepare import choose_reward
from clickstream.synthetic import SyntheticConfig, build_store
from scripts import hydra_argv
from tests.hydra_configs import TINY_RUN, compose_cfg

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def item_log(path: Path, n_items: int, n_sessions: int, *, sep: str = ",", seed: int = 0):
    """An item-view log as shops export it: ``sessionId``, ``itemId`` (bare numbers), ``ts``."""
    store = build_store(SyntheticConfig(mode="items", n_pages=n_items, seed=seed))
    raw = store.sample_sessions(n_sessions, seed + 1).hits
    log = pd.DataFrame(
        {
            "sessionId": raw["session_id"].str.removeprefix("syn-").astype(int),
            "itemId": raw["page_raw"].str.removeprefix("/"),
            "ts": raw["hit_time"].dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
    )
    log.to_csv(path, index=False, sep=sep)
    return log


def prepare_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python scripts/prepare_data.py <args>`` as a user types it (after the shell)."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_data.py"), *args, "show_progress=false"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.fixture(scope="module")
def big_item_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    path = tmp_path_factory.mktemp("shop") / "views.tsv"
    return path, item_log(path, 3000, 12_000, sep="\t")


def test_numeric_item_log_keeps_every_item_with_one_command_line(big_item_log, tmp_path) -> None:
    path, log = big_item_log
    n_items = log["itemId"].nunique()
    assert n_items >= 2000
    out = tmp_path / "views"
    # the shell has removed the quotes of data.columns="session=sessionId,page=itemId,time=ts"
    done = prepare_cli(
        "data=csv",
        f"data.path={path}",
        "data.columns=session=sessionId,page=itemId,time=ts",
        "data.delimiter=\\t",
        f"out_dir={out}",
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "meta.json").read_text())
    pages = pd.read_parquet(out / "pages.parquet")
    # every item is a page (was: ids collapsed to one page ':id')
    assert meta["summary"]["pages"] == len(pages) == n_items
    assert set(pages["page"].str.removeprefix("/")) == set(log["itemId"])
    # a readable number of groups, said so
    assert meta["pages"]["grouping"] == "cooccurrence"
    assert 4 <= meta["summary"]["page_groups"] <= 33
    assert any("no path hierarchy" in n for n in meta["notices"])
    assert "grouped by co-occurrence" in done.stderr
    # the data decides the reward: no revenue, times known
    assert meta["rewards"]["default"] == "engagement"
    assert meta["dataset"] == "views"
    reward, note = choose_reward(meta, "page_value")
    assert reward == "engagement" and "records no revenue" in note


def test_collapsing_ids_is_refused_naming_column_and_fix(tmp_path: Path) -> None:
    log = item_log(tmp_path / "x.csv", 300, 2000)
    log.assign(url="/product/" + log["itemId"]).to_csv(tmp_path / "paths.csv", index=False)
    from scripts.prepare_data import run

    cfg = compose_cfg(
        "prepare_data",
        [
            "data=csv",
            f"data.path={tmp_path / 'paths.csv'}",
            "data.columns={session:sessionId,page:url,time:ts}",
            f"out_dir={tmp_path / 'out'}",
            "show_progress=false",
        ],
    )
    with pytest.raises(ClickstreamError) as info:
        run(cfg)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'paths.csv'}, column 'url': page identity would merge")
    assert "into 1 page(s)" in message and "-> '/product/:id'" in message
    assert "data.pages.identity=raw" in message and "data.pages.min_page_ratio=0" in message
    assert not (tmp_path / "out").exists()
    # the fix the message names works
    cfg.data.pages.identity = "raw"
    meta = run(cfg)
    assert meta["summary"]["pages"] == log["itemId"].nunique()


def test_hydra_argv_reads_the_forms_users_type() -> None:
    args = hydra_argv(
        [
            "data.columns=session=sid,page=item,time=ts",
            "data.delimiter=\\t",
            "data.delimiter=;",
            "data.order_by=eventdate,timeframe",
            "data.order_by=[eventdate,timeframe]",
            "data.columns=cols.yaml",
            "out_dir=x",
        ]
    )
    cfg = compose_cfg("prepare_data", ["data=csv", "data.path=x", *args])
    assert cfg.data.columns == "cols.yaml"  # the last one wins
    assert cfg.data.delimiter == ";"
    assert list(cfg.data.order_by) == ["eventdate", "timeframe"]
    cfg = compose_cfg("prepare_data", ["data=csv", "data.path=x", *args[:1]])
    assert cfg.data.loader.columns == "session=sid,page=item,time=ts"
    cfg = compose_cfg("prepare_data", ["data=csv", "data.path=x", *hydra_argv(args[3:4])])
    assert cfg.data.loader.order_by == "eventdate,timeframe"
    # Paths Hydra's grammar cannot read as typed: a Hive-style folder, spaces and a comma.
    for path in ("lake/dt=2017-08-01/part.csv", "my exports/views, aug.csv"):
        cfg = compose_cfg("prepare_data", ["data=csv", *hydra_argv([f"data.path={path}"])])
        assert cfg.data.path == path


@pytest.fixture
def no_revenue_run(tmp_path: Path) -> list[str]:
    """A tiny pipeline's overrides on a small item log without revenue."""
    item_log(tmp_path / "shop.csv", 300, 3000)
    return [
        f"out_dir={tmp_path / 'run'}",
        *[o for o in TINY_RUN if not o.startswith("data.")],
        "data=csv",
        f"data.path={tmp_path / 'shop.csv'}",
        "data.columns={session:sessionId,page:itemId,time:ts}",
    ]


def test_pipeline_decides_the_reward_before_training(
    no_revenue_run: list[str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from scripts import pipeline

    class Trained(Exception):
        pass

    def no_training(cfg):
        raise Trained(cfg.simulator.model.hidden_size)

    monkeypatch.setattr(pipeline.train_simulator, "run", no_training)
    cfg = compose_cfg("pipeline", no_revenue_run)
    with pytest.raises(Trained):
        pipeline.run(cfg)
    out = [line.strip() for line in capsys.readouterr().out.splitlines()]
    # said in the data stage, before the visitor model's header: before anything trains
    note = out.index(
        "note: reward: shop records no revenue and no value column, so the reward is engagement "
        "(expected seconds on the landed page) instead of page_value; set "
        "env.reward=<engagement|pageviews> to choose"
    )
    assert out[0].startswith("NextPage main job:") and out[note + 1] == "reward: engagement"
    assert next(i for i, line in enumerate(out) if line.startswith("[2/")) > note
    assert cfg.env.reward == "engagement"
    # a reward the data cannot pay stops the run before any training, naming the key
    cfg = compose_cfg("pipeline", [*no_revenue_run, "env.reward=revenue"])
    with pytest.raises(ClickstreamError, match=r"^env.reward=revenue needs transactions"):
        pipeline.run(cfg)


@pytest.mark.slow
def test_pipeline_runs_to_the_end_on_a_site_without_revenue(no_revenue_run, capsys) -> None:
    import torch

    from scripts import pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = pipeline.run(compose_cfg("pipeline", no_revenue_run))
    finally:
        torch.set_num_threads(threads)
    assert report["reward"]["reward"] == "engagement"
    out = capsys.readouterr().out
    assert "\n      note: reward: shop records no revenue" in out.split("\n[2/")[0]
    assert set(report["stages"].values()) == {"ran"}
    results = Path(no_revenue_run[0].removeprefix("out_dir=")) / "eval" / "results.md"
    text = results.read_text()
    # the report is titled by the data actually loaded, not by the experiment name
    assert text.startswith("# Results: shop\n")
    assert "- reward: engagement" in text


def test_synthetic_item_store_prepares_with_one_command(tmp_path: Path) -> None:
    from clickstream.synthetic import SyntheticStore
    from scripts.prepare_data import run

    out = tmp_path / "items"
    meta = run(
        compose_cfg(
            "prepare_data",
            [
                "data=synthetic",
                "data.mode=items",
                "data.n_pages=2000",
                "data.n_sessions=5000",
                f"out_dir={out}",
                "show_progress=false",
            ],
        )
    )
    hits = pd.read_parquet(out / "hits.parquet")
    assert meta["dataset"] == "synthetic_items_2000p"
    assert meta["summary"]["pages"] == hits["page_raw"].nunique()  # every item viewed is a page
    assert meta["summary"]["page_groups"] == 8  # the store's categories (its content groups)
    assert meta["rewards"]["default"] == "engagement"
    assert meta["true_model"]["bayes_log_loss"]["test"] > 0
    store = SyntheticStore.load(out / "true_model")
    assert store.mode == "items" and store.n_pages == 2000
