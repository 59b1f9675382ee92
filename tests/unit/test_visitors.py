"""The visitors layer: the registry of kinds, capabilities as attributes, the one definition of
the pages an action shows, and no kind dispatch anywhere else."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

from clickstream.errors import ClickstreamError
from envs import visitors
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics
from envs.visitors import NextPage
from envs.visitors.base import mixture_next_page

REPO = Path(__file__).resolve().parents[2]

TOY = np.array(
    [
        [0.0, 0.5, 0.3, 0.2],
        [0.2, 0.0, 0.4, 0.4],
        [0.1, 0.1, 0.0, 0.8],
    ]
)


def test_the_registry_knows_every_kind_and_their_capabilities() -> None:
    kinds = visitors.kinds()
    assert {"gru", "latent_class", "markov", "true"} <= set(kinds)
    gru, latent, markov, truth = (kinds[k] for k in ("gru", "latent_class", "markov", "true"))
    assert gru.files == ("model.pt",) and gru.learned and gru.config_key == "model"
    assert latent.files == ("latent_class.npz",) and latent.config_key == "latent_class"
    assert latent.latent_state and latent.tables and not gru.tables and not gru.latent_state
    assert not markov.learned and markov.tables and not markov.latent_state
    # the planners take the latent-type GRU, whose tables exist when its trunk is first-order
    lgru = kinds["latent_gru"]
    assert lgru.tables and lgru.latent_state
    assert truth.ground_truth and truth.latent_state and not truth.learned
    assert visitors.default_kind().name == "gru"
    assert visitors.ground_truth().name == "true"
    assert visitors.first_order().name == "markov"
    assert visitors.get(True).name == "true"  # YAML's unquoted `true`
    with pytest.raises(ClickstreamError, match=r"env\.dynamics must be one of \[.*'gru'.*\]"):
        visitors.get("nope")
    with pytest.raises(ClickstreamError, match="visitor_model must be one of"):
        visitors.get("nope", key="visitor_model")
    # which kinds a simulator config trains: those whose key is set
    trained = visitors.trained_kinds({"model": {}, "latent_class": None, "trainer": {}})
    assert [k.name for k in trained] == ["gru"]
    both = visitors.trained_kinds({"model": {}, "latent_class": {"classes": 2}})
    assert [k.name for k in both] == ["gru", "latent_class"]


def test_a_kind_registered_elsewhere_is_found_by_name_and_a_taken_name_is_refused() -> None:
    class Toy(visitors.VisitorKind):
        name = "toy_visitors_test"

        def load(self, data, model_path=None, device="cpu"):  # pragma: no cover
            raise NotImplementedError

    try:
        visitors.register(Toy)
        assert visitors.get("toy_visitors_test").name == "toy_visitors_test"
        assert not visitors.get("toy_visitors_test").learned
        with pytest.raises(ClickstreamError, match="needs a prepared data_dir"):
            visitors.get("toy_visitors_test").from_store(None)

        class Other(Toy):
            name = "toy_visitors_test"

        with pytest.raises(ClickstreamError, match="is taken by"):
            visitors.register(Other)
    finally:
        visitors.KINDS.pop("toy_visitors_test", None)


def test_next_page_mixes_types_and_keeps_one_row_as_it_is() -> None:
    row = np.array([0.1, 0.2, 0.7])
    one = NextPage.single(row)
    assert one.n_types == 1 and np.shares_memory(one.probs, one.rows)
    np.testing.assert_array_equal(one.probs, row)
    two = NextPage(np.array([0.25, 0.75]), np.array([[0.2, 0.2, 0.6], [0.0, 0.4, 0.6]]))
    np.testing.assert_allclose(two.probs, [0.05, 0.35, 0.6])


def test_mixture_posterior_is_bayes_rule_over_the_types() -> None:
    # two types over 2 pages: type 0 goes 0 -> 1, type 1 stays on 0
    prior = np.array([0.5, 0.5])
    entry = np.array([[1.0, 0.0], [0.5, 0.5]])
    t = np.array(
        [
            [[0.0, 0.9, 0.1], [0.5, 0.0, 0.5]],
            [[0.8, 0.1, 0.1], [0.0, 0.5, 0.5]],
        ]
    )
    nxt = mixture_next_page(prior, entry, t, [0, 1])
    # p(z, 0 -> 1) = 0.5 * 1.0 * 0.9 and 0.5 * 0.5 * 0.1
    w = np.array([0.45, 0.025]) / 0.475
    np.testing.assert_allclose(nxt.weights, w)
    np.testing.assert_array_equal(nxt.rows, t[:, 1])
    np.testing.assert_allclose(nxt.probs, w @ t[:, 1])
    with pytest.raises(ClickstreamError, match=r"no visitor type goes from page id 0 to page id 1"):
        mixture_next_page(prior, entry, np.zeros_like(t), [0, 1])
    with pytest.raises(ClickstreamError, match="no visitor type enters at page id 1"):
        mixture_next_page(prior, np.array([[1.0, 0.0], [1.0, 0.0]]), t, [1, 0])


def _toy(groups=None, **kw) -> SiteCore:
    dyn = MarkovDynamics(np.array([1.0, 0.0, 0.0]), TOY, ("/a", "/b", "/c"))
    return SiteCore(dyn, MultinomialBoost(1.0), np.zeros(4), 2, page_groups=groups, **kw)


def test_shown_mask_pages_groups_and_nothing() -> None:
    core = _toy()  # actions: pages 0, 1, 2, then "show nothing"
    np.testing.assert_array_equal(
        core.shown_mask([0, 2, 3]).numpy(),
        [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
    )
    grouped = _toy(np.array([0, 1, 1]))  # actions: group 0, group 1, nothing
    np.testing.assert_array_equal(
        grouped.shown_mask([0, 1, 2]).numpy(),
        [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]],  # EXIT is never shown
    )


@pytest.mark.parametrize("groups", [None, np.array([0, 1, 1])])
def test_the_core_and_the_mdp_share_shown_mask(groups) -> None:
    from agents.tabular import SiteMDP

    core = _toy(groups)
    core.reset(seed=0)
    actions = torch.arange(core.n_actions)
    shown = core.shown_mask(actions)
    mdp = SiteMDP.from_core(core)
    rows = mdp.action_rows(0, actions).numpy()  # (P, A, P + 1)
    organic = mdp.transitions[0].numpy()
    for s_ in range(3):
        reachable = organic[s_] > 0
        for a in range(core.n_actions):
            # the boost multiplies the odds of exactly the shown pages by e
            ratio = rows[s_, a, reachable] / organic[s_, reachable]
            on = shown[a].numpy()[reachable]
            if on.any() and (~on).any():
                np.testing.assert_allclose(ratio[on] / ratio[~on][0], np.e, rtol=1e-6)
                np.testing.assert_allclose(ratio[~on], ratio[~on][0], rtol=1e-6)
            elif not on.any():
                np.testing.assert_allclose(ratio, 1.0, rtol=1e-6)
    # followed: landed on a shown page, for every draw
    for _ in range(50):
        a = torch.randint(0, core.n_actions, (2,))
        r = core.step(a)
        assert r.followed.tolist() == shown[a, r.landed].tolist()


ALLOWED = {
    # (file, string): why a kind's name may appear there as a string literal
    ("envs/config.py", "gru"): "the env schema's default kind (configs/env/site.yaml's)",
    ("envs/visitor_model.py", "gru"): "the GRU predictor's row in metric tables",
    ("envs/latent_class.py", "latent_class"): "the latent-class predictor's row",
    ("envs/latent_gru.py", "latent_gru"): "the latent-type GRU predictor's row",
    ("scripts/bench_agents.py", "gru"): "a benchmark's command-line default",
    ("scripts/bench_gpu.py", "gru"): "a benchmark's command-line default",
    ("scripts/bench_item_level.py", "gru"): "the GRU predictor's row in the benchmark's table",
    ("scripts/bench_env.py", "true"): "a benchmark's command-line default",
    ("scripts/bench_synthetic.py", "markov"): "a synthetic store's mode, not a visitor kind",
    ("scripts/study_table_error.py", "markov"): "a synthetic store's mode, not a visitor kind",
}
PROBES = re.compile(
    r"(hasattr|getattr)\([^)]*['\"](needs_latent_state|types|transitions|prior|intent|"
    r"latent_state|chains|tables|entry)['\"]"
)


def test_no_kind_dispatch_or_capability_probe_outside_the_registry() -> None:
    names = set(visitors.kinds())
    found = []
    for folder in ("envs", "agents", "webapp", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("envs/visitors/"):
                continue
            text = path.read_text(encoding="utf-8")
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type != tokenize.STRING:
                    continue
                value = tok.string.strip("\"'")
                if value in names and (rel, value) not in ALLOWED:
                    found.append(f"{rel}:{tok.start[0]}: {tok.string}")
            for i, line in enumerate(text.splitlines(), 1):
                if PROBES.search(line) or "MODEL_FILES" in line:
                    found.append(f"{rel}:{i}: {line.strip()}")
    assert found == []
