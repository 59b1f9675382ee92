"""Page normalisation and grouping: concrete examples, properties, folding, real store paths."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from clickstream.errors import ClickstreamError
from clickstream.pages import PageConfig, Rule, assign_pages, group_of, normalise_path

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pages"
DEFAULT = PageConfig()


def norm(raw: str, **kwargs) -> str:
    return normalise_path(raw, PageConfig(**kwargs) if kwargs else DEFAULT)


def raw_hits(
    pages: list[str],
    titles: list[str | None] | None = None,
    content: list[str | None] | None = None,
) -> pd.DataFrame:
    """The columns of raw hits that :func:`assign_pages` reads."""
    n = len(pages)
    return pd.DataFrame(
        {
            "page_raw": pd.Series(pages, dtype="str"),
            "page_title": pd.Series(titles if titles is not None else [None] * n, dtype="str"),
            "content_group": pd.Series(content if content is not None else [None] * n, dtype="str"),
        }
    )


# --------------------------------------------------------------------------------------------
# Normalisation: concrete examples


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # scheme, host, query and fragment stripped
        ("https://shop.example.com/Apparel/Mens?utm_source=x&b=2#top", "/apparel/mens"),
        ("http://shop.example.com", "/"),
        ("HTTP://Shop.Example.COM:8080/A/B/", "/a/b"),
        ("shop.example.com/bags", "/bags"),  # a scheme-less URL
        ("/bags?colour=red", "/bags"),
        ("/bags#reviews", "/bags"),
        ("/bags?x=1#frag", "/bags"),
        # session tokens as path parameters: one per visit, never part of the page
        ("/cart;jsessionid=0A1B2C3D4E?step=2", "/cart"),
        ("/shop;JSESSIONID=ab12/item;x=1", "/shop/item;x=1"),
        ("https://shop.example.com/a;phpsessid=9f8e7d/", "/a"),
        # lowercase, trailing slash, repeated slashes, surrounding whitespace
        ("/Google+Redesign/Apparel/", "/google+redesign/apparel"),
        ("//a///b//", "/a/b"),
        ("  /a/b  ", "/a/b"),
        ("/", "/"),
        ("", "/"),
        ("basket.html", "/basket.html"),  # a file name, not a host
        ("index.php", "/index.php"),
        # id-like segments
        ("/product/12345", "/product/:id"),
        ("/product/0/", "/product/:id"),
        ("/order/123e4567-e89b-12d3-a456-426614174000/view", "/order/:id/view"),
        ("/order/123E4567-E89B-12D3-A456-426614174000", "/order/:id"),  # lowercased first
        ("/item/0123456789abcdef0123", "/item/:id"),
        ("/item/a1b2c3d4e5f6", "/item/:id"),  # 12 hex chars with a digit
        ("/12/34/x", "/:id/:id/x"),
        # ... but not ordinary words or short hex-looking words
        ("/deadbeef", "/deadbeef"),
        ("/deadbeefcafe", "/deadbeefcafe"),  # 12 hex letters, no digit: a word
        ("/a1b2c3", "/a1b2c3"),  # too short for a hex id
        ("/google+redesign/apparel", "/google+redesign/apparel"),
        ("/shop/abc123", "/shop/abc123"),
        ("/v2beta/page", "/v2beta/page"),
    ],
)
def test_normalise_examples(raw: str, expected: str) -> None:
    assert norm(raw) == expected


def test_lowercase_off_keeps_case() -> None:
    assert norm("/Apparel/Mens/", lowercase=False) == "/Apparel/Mens"


def test_collapse_ids_off_keeps_ids() -> None:
    assert norm("/product/12345", collapse_ids=False) == "/product/12345"


def test_keep_query_params() -> None:
    cfg = PageConfig(keep_query_params=["mode"])
    assert normalise_path("/myaccount.html?mode=vieworder", cfg) == "/myaccount.html?mode=vieworder"
    assert normalise_path("/myaccount.html?mode=VIEWORDER&utm=1#x", cfg) == (
        "/myaccount.html?mode=vieworder"
    )
    assert normalise_path("/myaccount.html?utm=1", cfg) == "/myaccount.html"
    assert normalise_path("/myaccount.html", cfg) == "/myaccount.html"
    assert normalise_path("https://x.com/MyAccount.html/?mode=billingaddress", cfg) == (
        "/myaccount.html?mode=billingaddress"
    )
    # several kept parameters come out sorted by name, whatever their order in the raw URL
    cfg2 = PageConfig(keep_query_params=["mode", "tab"])
    assert normalise_path("/a?tab=2&x=9&mode=1", cfg2) == "/a?mode=1&tab=2"
    assert normalise_path("/a?mode=1&tab=2", cfg2) == "/a?mode=1&tab=2"


def test_rewrite_rules_apply_in_order() -> None:
    ab = PageConfig(rewrite_rules=[Rule("a", replace="b"), Rule("b", replace="c")])
    ba = PageConfig(rewrite_rules=[Rule("b", replace="c"), Rule("a", replace="b")])
    assert normalise_path("/a", ab) == "/c"
    assert normalise_path("/a", ba) == "/b"
    # rules run after the built-in steps: they see the lowercased, slash-trimmed path
    cfg = PageConfig(rewrite_rules=[{"pattern": "/home$", "replace": ""}])
    assert normalise_path("/Bags/Home/", cfg) == "/bags"
    # ... with back-references
    cfg = PageConfig(rewrite_rules=[{"pattern": r"^/(\w+)-(\w+)$", "replace": r"/\2/\1"}])
    assert normalise_path("/a-b", cfg) == "/b/a"


def test_normalise_false_keeps_text_trimmed() -> None:
    cfg = PageConfig(normalise=False)
    assert normalise_path("  Front Page ", cfg) == "Front Page"
    assert normalise_path("/A//B/?q=1#x", cfg) == "/A//B/?q=1#x"
    assert normalise_path("12345", cfg) == "12345"


def test_bad_page_config_raises() -> None:
    with pytest.raises(ClickstreamError, match="identity"):
        PageConfig(identity="url")
    with pytest.raises(ClickstreamError, match="fallback_level"):
        PageConfig(fallback_level=0)
    with pytest.raises(ClickstreamError, match=r"invalid regex '\('"):
        PageConfig(group_rules=[Rule("(", group="x")])
    with pytest.raises(ClickstreamError, match="needs a 'group'"):
        PageConfig(group_rules=[Rule("^/a", replace="x")])
    with pytest.raises(ClickstreamError, match="colour"):
        PageConfig.from_dict({"colour": "red"})


# --------------------------------------------------------------------------------------------
# Normalisation: properties

KEEP = ("mode", "q")
CONFIGS_FOR_PROPERTIES = {
    "default": PageConfig(),
    "keep": PageConfig(keep_query_params=KEEP),
    "case": PageConfig(lowercase=False),
    "keep_case": PageConfig(lowercase=False, keep_query_params=KEEP),
    "no_ids": PageConfig(collapse_ids=False),
}

# Text of arbitrary characters, biased towards the characters that matter to URLs.
URL_PIECES = [*"/?#&=:.;%+-_ aAzZ09[]é\t", "//", "://", "http://", "www.x.com", "mode", "q", "123"]
url_like_text = st.lists(st.sampled_from(URL_PIECES), max_size=16).map("".join) | st.text(
    max_size=30
)

segment = st.one_of(
    st.from_regex(r"[A-Za-z0-9+._~-]{1,12}", fullmatch=True),
    st.integers(0, 10**9).map(str),
    st.uuids().map(str),
    st.sampled_from(["", "Apparel", "deadbeef", "0123456789ABCDEF", "index.html", "%20"]),
)
query_pair = st.tuples(
    st.sampled_from([*KEEP, "MODE", "utm_source", "x"]),
    st.from_regex(r"[A-Za-z0-9%+./:?=-]{0,8}", fullmatch=True),
)
built_url = st.builds(
    lambda scheme, host, segs, trailing, pairs, frag: (
        (f"{scheme}://{host}" if scheme else host)
        + "/"
        + "/".join(segs)
        + ("/" if trailing else "")
        + ("?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else "")
        + (f"#{frag}" if frag is not None else "")
    ),
    st.sampled_from(["", "http", "https", "HTTPS"]),
    st.sampled_from(["", "shop.example.com", "Shop.Example.COM:8080", "localhost"]),
    st.lists(segment, max_size=5),
    st.booleans(),
    st.lists(query_pair, max_size=3),
    st.none() | st.from_regex(r"[A-Za-z0-9/?#=&]{0,6}", fullmatch=True),
)


def check_normalised(raw: str, cfg: PageConfig) -> None:
    out = normalise_path(raw, cfg)
    assert normalise_path(out, cfg) == out, "not idempotent"
    assert out.startswith("/")
    assert "#" not in out
    assert "//" not in out
    path, sep, query = out.partition("?")
    assert path == "/" or not path.endswith("/")
    if cfg.lowercase:
        assert out == out.lower()
    if sep:
        # a query survives only when it holds a kept parameter, and then only kept ones
        assert cfg.keep_query_params
        kept = dict(parse_qsl(query, keep_blank_values=True))
        assert kept and set(kept) <= set(cfg.keep_query_params)
    else:
        assert "?" not in out


@settings(max_examples=300, deadline=None)
@given(raw=url_like_text, name=st.sampled_from(sorted(CONFIGS_FOR_PROPERTIES)))
def test_normalise_properties_on_arbitrary_text(raw: str, name: str) -> None:
    cfg = CONFIGS_FOR_PROPERTIES[name]
    check_normalised(raw, cfg)


@settings(max_examples=300, deadline=None)
@given(raw=built_url, name=st.sampled_from(sorted(CONFIGS_FOR_PROPERTIES)))
def test_normalise_properties_on_built_urls(raw: str, name: str) -> None:
    cfg = CONFIGS_FOR_PROPERTIES[name]
    check_normalised(raw, cfg)
    out = normalise_path(raw, cfg)
    # a kept parameter present in the raw query is always kept
    raw_query = raw.split("#", 1)[0].partition("?")[2]
    present = {k for k, _ in parse_qsl(raw_query, keep_blank_values=True)}
    assert ("?" in out) == bool(present & set(cfg.keep_query_params))


@pytest.mark.parametrize("raw", ["/a /", "/a/ ?x=1", "/a #frag", "/a/\t/"])
def test_whitespace_before_trailing_slash_or_query_is_trimmed(raw: str) -> None:
    out = norm(raw)
    assert out == "/a"
    assert norm(out) == out


@pytest.mark.parametrize(
    "raw", ["http://[shop/x", "x://[", "http://]", "https://a]b[/c", "http://a\u2100b/x"]
)
def test_malformed_host_does_not_crash(raw: str) -> None:
    try:
        out = norm(raw)
    except ClickstreamError as exc:
        assert raw in str(exc)
    else:
        assert out.startswith("/")


def test_repeated_kept_parameter_is_idempotent_and_order_free() -> None:
    cfg = PageConfig(keep_query_params=["mode"])
    out = normalise_path("/a?mode=B&mode=a", cfg)
    assert normalise_path(out, cfg) == out
    assert out == normalise_path("/a?mode=a&mode=B", cfg)


# --------------------------------------------------------------------------------------------
# Grouping


def test_first_matching_rule_wins_and_expands_backrefs() -> None:
    cfg = PageConfig(
        group_rules=[
            Rule(r"/quickview$", group="quickview"),
            Rule(r"^/shop/([^/]+)", group=r"cat:\1"),
            Rule(r"^/shop", group="shop"),
        ]
    )
    assert group_of("/shop/shoes/quickview", None, cfg) == "quickview"
    assert group_of("/shop/shoes/red", None, cfg) == "cat:shoes"
    assert group_of("/shop", None, cfg) == "shop"
    # patterns are searched, not anchored
    assert group_of("/x/quickview", None, cfg) == "quickview"
    reordered = PageConfig(group_rules=[cfg.group_rules[2], *cfg.group_rules[:2]])
    assert group_of("/shop/shoes/quickview", None, reordered) == "shop"


def test_content_group_only_when_no_rule_matches() -> None:
    cfg = PageConfig(group_rules=[Rule("^/a", group="alpha")])
    assert group_of("/a/x", "Content", cfg) == "alpha"
    assert group_of("/b/x", "  Content Group ", cfg) == "content group"  # stripped, lowercased
    assert group_of("/b/x", None, cfg) == "/b"
    assert group_of("/b/x", "", cfg) == "/b"
    off = PageConfig(group_rules=[Rule("^/a", group="alpha")], use_content_groups=False)
    assert group_of("/b/x", "Content", off) == "/b"


def test_blank_content_group_counts_as_missing() -> None:
    assert group_of("/b/x", "  ", PageConfig()) == "/b"
    out = assign_pages(raw_hits(["/b/x", "/b/x"], content=["  ", "\t"]), PageConfig())
    assert out.page_group.tolist() == ["/b", "/b"]


@pytest.mark.parametrize(
    ("page", "level1", "level2"),
    [
        ("/a/b/c", "/a", "/a/b"),
        ("/a", "/a", "/a"),
        ("/", "/", "/"),
        ("/a/b?mode=x", "/a", "/a/b"),
        ("/myaccount.html?mode=vieworder", "/myaccount.html", "/myaccount.html"),
    ],
)
def test_fallback_level(page: str, level1: str, level2: str) -> None:
    assert group_of(page, None, PageConfig(fallback_level=1)) == level1
    assert group_of(page, None, PageConfig(fallback_level=2)) == level2


def test_assign_pages_normalises_and_groups_each_hit() -> None:
    hits = raw_hits(["/A/x/", "/a/x", "https://h.com/a/y?u=1", "/b/123", "/b/456"])
    out = assign_pages(hits, PageConfig())
    assert out.page.tolist() == ["/a/x", "/a/x", "/a/y", "/b/:id", "/b/:id"]
    assert out.page_group.tolist() == ["/a", "/a", "/a", "/b", "/b"]
    assert out.page.index.equals(hits.index)
    assert out.report == {
        "raw_pages": 5,
        "pages": 3,
        "grouping": "rules",
        "pages_after_folding": 3,
        "page_groups": 2,
    }


def test_fold_groups_and_pages_exact_counts() -> None:
    # pages (views): /a/x 5, /a/y 2, /b/z 1, /c/w 3, /c/v 1; groups: /a 7, /b 1, /c 4
    pages = ["/a/x"] * 5 + ["/a/y"] * 2 + ["/b/z"] + ["/c/w"] * 3 + ["/c/v"]
    hits = raw_hits(pages)

    groups_only = assign_pages(hits, PageConfig(fold_groups_below=2))
    assert groups_only.page_group.value_counts().to_dict() == {"/a": 7, "/c": 4, "other": 1}
    assert groups_only.page.tolist() == pages  # pages untouched
    assert groups_only.report["groups_folded"] == 1
    assert groups_only.report["page_groups"] == 3

    both = assign_pages(hits, PageConfig(fold_groups_below=2, fold_pages_below=3))
    assert both.page.value_counts().to_dict() == {
        "/a/x": 5,
        "/c/w": 3,
        "other:/a": 2,
        "other:other": 1,
        "other:/c": 1,
    }
    # a folded page keeps its (possibly folded) group
    assert dict(zip(both.page, both.page_group, strict=True)) == {
        "/a/x": "/a",
        "other:/a": "/a",
        "other:other": "other",
        "/c/w": "/c",
        "other:/c": "/c",
    }
    assert both.report == {
        "raw_pages": 5,
        "pages": 5,
        "grouping": "rules",
        "groups_folded": 1,
        "pages_folded": 3,
        "pages_after_folding": 5,
        "page_groups": 3,
    }

    pages_only = assign_pages(hits, PageConfig(fold_pages_below=2))
    assert sorted(pages_only.page.unique()) == ["/a/x", "/a/y", "/c/w", "other:/b", "other:/c"]
    assert pages_only.report["pages_folded"] == 2
    assert "groups_folded" not in pages_only.report


def test_identity_title_with_missing_titles_falls_back_to_path() -> None:
    hits = raw_hits(
        ["/p1", "/p2", "/p3", "/p4", "/p1"],
        titles=["Home  Page", None, "", "   ", " Home Page "],
    )
    out = assign_pages(hits, PageConfig(identity="title"))
    # whitespace is trimmed and runs of it collapse, so both /p1 views share one title
    assert out.page.tolist() == ["Home Page", "/p2", "/p3", "/p4", "Home Page"]
    assert out.report["page_views_without_title"] == 3
    assert out.report["pages"] == 4


def test_page_with_two_content_groups_gets_the_most_frequent() -> None:
    hits = raw_hits(
        ["/p", "/p", "/p", "/p", "/r", "/r", "/r"],
        content=["Blog", "Shop", "Shop", "Shop", "Help", "Help", "Docs"],
    )
    out = assign_pages(hits, PageConfig())
    assert out.page_group.tolist() == ["shop"] * 4 + ["help"] * 3
    # every page lands in exactly one group
    assert pd.DataFrame({"p": out.page, "g": out.page_group}).groupby("p")["g"].nunique().max() == 1


def test_page_seen_mostly_without_content_group_uses_fallback() -> None:
    hits = raw_hits(["/q/x"] * 3, content=[None, None, "Help"])
    out = assign_pages(hits, PageConfig())
    assert out.page_group.tolist() == ["/q"] * 3


def test_unique_raw_pages_processed_once_many_rows() -> None:
    rng = np.random.default_rng(0)
    pages = rng.choice(["/a/1", "/a/2", "/B/", "/c?x=1"], size=2_000)
    out = assign_pages(raw_hits(list(pages)), PageConfig())
    assert set(out.page) == {"/a/:id", "/b", "/c"}
    assert (out.page == "/a/:id").sum() == int(np.isin(pages, ["/a/1", "/a/2"]).sum())


# --------------------------------------------------------------------------------------------
# The Google Merchandise Store configuration


def merchandise_config() -> PageConfig:
    """``configs/pages/merchandise_store.yaml`` merged over ``default.yaml`` as Hydra does."""
    default = OmegaConf.load(CONFIGS / "default.yaml")
    own = OmegaConf.load(CONFIGS / "merchandise_store.yaml")
    assert list(own.pop("defaults")) == ["default", "_self_"]
    merged = OmegaConf.to_container(OmegaConf.merge(default, own), resolve=True)
    return PageConfig.from_dict(merged)


@pytest.mark.parametrize(
    ("raw", "page", "group"),
    [
        ("/home", "/home", "home"),
        ("/", "/", "home"),
        ("/store.html", "/store.html", "home"),
        ("/basket.html", "/basket.html", "basket"),
        ("/ordercompleted.html", "/ordercompleted.html", "order_completed"),
        ("/payment.html", "/payment.html", "checkout"),
        ("/yourinfo.html", "/yourinfo.html", "checkout"),
        ("/payment.html/home", "/payment.html", "checkout"),
        ("/signin.html", "/signin.html", "sign_in"),
        (
            "/google+redesign/apparel/mens/mens+t+shirts",
            "/google+redesign/apparel/mens/mens+t+shirts",
            "category:apparel",
        ),
        (
            "/google redesign/apparel/mens/mens t shirts",
            "/google+redesign/apparel/mens/mens+t+shirts",
            "category:apparel",
        ),
        (
            "/google+redesign/bags/backpacks/home",
            "/google+redesign/bags/backpacks",
            "category:bags",
        ),
        ("/google+redesign/electronics", "/google+redesign/electronics", "category:electronics"),
        (
            "/google+redesign/shop+by+brand/youtube",
            "/google+redesign/shop+by+brand/youtube",
            "brands",
        ),
        (
            "/google+redesign/bags/backpacks/waterproof+backpack.axd",
            "/google+redesign/bags/backpacks/waterproof+backpack.axd",
            "product",
        ),
        (
            "/google+redesign/shop+by+brand/waze/waze+pack+of+9+decal+set.axd",
            "/google+redesign/shop+by+brand/waze/waze+pack+of+9+decal+set.axd",
            "product",
        ),
        (
            "/google+redesign/bags/backpacks//quickview",
            "/google+redesign/bags/backpacks/quickview",
            "quickview",
        ),
        (
            "/google+redesign/shop+by+brand/youtube/quickview",
            "/google+redesign/shop+by+brand/youtube/quickview",
            "quickview",
        ),
        ("/asearch.html", "/asearch.html", "search"),
        (
            "/store-policies/frequently-asked-questions",
            "/store-policies/frequently-asked-questions",
            "policies",
        ),
        (
            "/store-policies/frequently-asked-questions/home",
            "/store-policies/frequently-asked-questions",
            "policies",
        ),
        ("/myaccount.html?mode=vieworder", "/myaccount.html?mode=vieworder", "account"),
        ("/myaccount.html?mode=billingaddress", "/myaccount.html?mode=billingaddress", "account"),
        (
            "https://shop.googlemerchandisestore.com/Google+Redesign/Apparel?utm=x#top",
            "/google+redesign/apparel",
            "category:apparel",
        ),
    ],
)
def test_merchandise_store_pages_and_groups(raw: str, page: str, group: str) -> None:
    cfg = merchandise_config()
    got = normalise_path(raw, cfg)
    assert got == page
    assert normalise_path(got, cfg) == got
    assert group_of(got, None, cfg) == group


def test_merchandise_store_account_modes_stay_distinct() -> None:
    cfg = merchandise_config()
    hits = raw_hits(
        [
            "/myaccount.html?mode=vieworder",
            "/myaccount.html?mode=billingaddress",
            "/myaccount.html?mode=vieworder&utm_source=mail",
            "/myaccount.html",
        ]
    )
    out = assign_pages(hits, cfg)
    assert out.page.tolist() == [
        "/myaccount.html?mode=vieworder",
        "/myaccount.html?mode=billingaddress",
        "/myaccount.html?mode=vieworder",
        "/myaccount.html",
    ]
    assert set(out.page_group) == {"account"}
    assert out.report["pages"] == 3


def test_trailing_whitespace_is_trimmed_before_ids_collapse() -> None:
    # found by hypothesis: "/a/123 /" gave "/a/123", which normalised again to "/a/:id"
    assert norm("/a/123 /") == norm("/a/123") == "/a/:id"
    # an id that is the whole page is the page's name (an item log): never collapsed
    assert norm("123 /") == norm("/123") == norm("123") == "/123"


# --------------------------------------------------------------------------------------------
# Real exports (issue 18): Unicode forms, raw identity, no silent collapse, item-level groups


def test_nfc_and_nfd_spellings_are_one_page() -> None:
    nfc, nfd = "/caf\u00e9/cr\u00e8me", "/cafe\u0301/cre\u0300me"
    assert nfc != nfd
    out = assign_pages(raw_hits([nfc, nfd, nfd], titles=["Caf\u00e9", "Cafe\u0301", None]), DEFAULT)
    assert out.page.nunique() == 1 and out.page.iloc[0] == nfc
    assert out.report["raw_pages"] == 1
    titled = assign_pages(
        raw_hits([nfc, nfd], titles=["Caf\u00e9", "Cafe\u0301"]), PageConfig(identity="title")
    )
    assert titled.page.tolist() == ["Caf\u00e9", "Caf\u00e9"]
    raw = assign_pages(raw_hits([" 12 ", "1\u0301"]), PageConfig(identity="raw"))
    assert raw.page.tolist() == ["12", "1\u0301"]


def test_raw_identity_keeps_values_as_exported() -> None:
    pages = ["/Product/12345?x=1", "/product/12346", "Frontpage"]
    out = assign_pages(raw_hits(pages), PageConfig(identity="raw"))
    assert out.page.tolist() == pages
    assert out.report["pages"] == 3


def test_an_id_that_is_the_whole_page_is_kept() -> None:
    # an item log's page column holds bare item ids: each one is a page
    out = assign_pages(raw_hits(["81766", "31331", "/32118", "81766"]), DEFAULT)
    assert out.page.tolist() == ["/81766", "/31331", "/32118", "/81766"]


def test_collapsing_most_values_is_refused_with_examples_and_fix() -> None:
    ids = [f"/item/{i}" for i in range(100)]
    with pytest.raises(ClickstreamError) as info:
        assign_pages(raw_hits(ids), DEFAULT, source_column="item_url")
    err = info.value
    assert err.column == "item_url"
    message = str(err)
    assert "would merge 100 distinct values into 1 page(s)" in message
    assert "'/item/0' -> '/item/:id', '/item/1' -> '/item/:id'" in message
    assert "data.pages.identity=raw" in message and "data.pages.collapse_ids=false" in message
    # below 5 % of the raw values is refused too; the key accepts it
    mixed = [*ids, "/a", "/b", "/c", "/d"]  # 104 values, 5 pages: 4.8 %
    with pytest.raises(ClickstreamError, match="into 5 page"):
        assign_pages(raw_hits(mixed), DEFAULT)
    assert assign_pages(raw_hits([*mixed, "/e"]), DEFAULT).report["pages"] == 6  # 5.7 %
    accepted = assign_pages(raw_hits(ids), PageConfig(min_page_ratio=0))
    assert accepted.page.unique().tolist() == ["/item/:id"]
    # a few spellings of one page are a site of one page; ten values are not
    assert assign_pages(raw_hits(["/a", "/a/", "/A"]), DEFAULT).report["pages"] == 1
    with pytest.raises(ClickstreamError, match="10 distinct values into 1 page"):
        assign_pages(raw_hits([f"/x/{i}" for i in range(10)]), DEFAULT)


def test_folding_most_pages_is_refused_too() -> None:
    pages = [f"/p/x{i}" for i in range(40)] + ["/top"] * 50
    with pytest.raises(
        ClickstreamError, match=r"folding pages with fewer than 2.*fold_pages_below"
    ):
        assign_pages(raw_hits(pages), PageConfig(fold_pages_below=2))
    out = assign_pages(raw_hits(pages), PageConfig(fold_pages_below=2, min_page_ratio=0))
    assert out.report["pages_after_folding"] == 2


def block_sessions(n_blocks: int, per_block: int, n_sessions: int, seed: int = 0):
    """Sessions that each browse one block of item pages (no path hierarchy): the
    co-occurrence grouping should find the blocks."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        block = rng.integers(n_blocks)
        for item in rng.integers(0, per_block, rng.integers(2, 6)):
            rows.append((f"s{s}", str(100_000 + block * per_block + item)))
    frame = raw_hits([p for _, p in rows])
    frame["session_id"] = pd.Series([s for s, _ in rows], dtype="str")
    return frame


def test_item_level_site_is_grouped_by_cooccurrence() -> None:
    hits = block_sessions(n_blocks=6, per_block=30, n_sessions=3000)
    out = assign_pages(hits, PageConfig(max_groups=50))
    assert out.report["grouping"] == "cooccurrence"
    assert out.notices[0].startswith("pages: 180 pages with no path hierarchy (180 path groups)")
    block = (out.page.str.lstrip("/").astype(int) - 100_000) // 30
    # default n_groups for 180 pages: 4, fewer than the blocks: whole blocks share clusters
    assert (pd.crosstab(block, out.page_group) > 0).sum(axis=1).tolist() == [1] * 6
    exact = assign_pages(hits, PageConfig(max_groups=50, n_groups=6))
    table = pd.crosstab(block, exact.page_group)
    assert (table > 0).sum(axis=1).tolist() == [1] * 6
    assert sorted(exact.page_group.unique()) == [f"cluster_0{i}" for i in range(1, 7)]
    # path groups up to max_groups stay
    assert assign_pages(hits, PageConfig(max_groups=200)).report["grouping"] == "rules"
    assert (
        assign_pages(hits, PageConfig(grouping="rules", max_groups=50)).page_group.nunique() == 180
    )


def test_cooccurrence_counts_only_the_fit_rows() -> None:
    hits = block_sessions(n_blocks=4, per_block=20, n_sessions=1000)
    none = np.zeros(len(hits), dtype=bool)
    none[:1] = True  # one row: no pairs at all
    out = assign_pages(hits, PageConfig(grouping="cooccurrence", n_groups=4), fit_rows=none)
    assert set(out.page_group) == {"unlinked"}


def test_sparse_item_site_falls_back_to_traffic_bands() -> None:
    # single-page sessions: nothing co-occurs, so traffic rank decades group the pages
    pages = [str(200_000 + i) for i in range(150) for _ in range(150 - i)]
    hits = raw_hits(pages)
    hits["session_id"] = pd.Series([f"s{i}" for i in range(len(pages))], dtype="str")
    out = assign_pages(hits, PageConfig(max_groups=50))
    assert out.report["grouping"] == "traffic"
    group = dict(zip(out.page, out.page_group, strict=True))
    assert group["/200000"] == group["/200009"] == "top_10"
    assert group["/200010"] == group["/200099"] == "rank_11-100"
    assert group["/200100"] == "rank_101-1000"
    assert "since only 0% of them are ever viewed next to another page" in out.notices[0]


def test_rules_and_content_groups_keep_their_pages() -> None:
    hits = block_sessions(n_blocks=3, per_block=60, n_sessions=2000)
    hits["content_group"] = pd.Series(
        ["Shoes" if p.endswith("7") else None for p in hits["page_raw"]], dtype="str"
    )
    out = assign_pages(hits, PageConfig(max_groups=50, n_groups=3))
    groups = dict(zip(out.page, out.page_group, strict=True))
    assert all(g == "shoes" for p, g in groups.items() if p.endswith("7"))
    assert {g for p, g in groups.items() if not p.endswith("7")} <= {
        "cluster_01",
        "cluster_02",
        "cluster_03",
    }


def test_grouping_options_are_checked() -> None:
    with pytest.raises(ClickstreamError, match=r"pages\.grouping must be one of"):
        PageConfig(grouping="kmeans")
    with pytest.raises(
        ClickstreamError, match=r"^data\.pages\.n_groups must be a whole number >= 2"
    ):
        PageConfig(n_groups=1)
    with pytest.raises(ClickstreamError, match=r"^data\.pages\.min_page_ratio must be a number in"):
        PageConfig(min_page_ratio=2)
    # never cut or read another way: 2.7 groups is not 2, "false" is not a false value
    with pytest.raises(ClickstreamError, match=r"data\.pages\.n_groups .* got 2\.7"):
        PageConfig(n_groups=2.7)
    with pytest.raises(ClickstreamError, match=r"data\.pages\.lowercase must be true or false"):
        PageConfig(lowercase="false")
    with pytest.raises(ClickstreamError, match=r"data\.pages\.fold_pages_below .* >= 0"):
        PageConfig(fold_pages_below=-1)
    with pytest.raises(ClickstreamError, match=r"unknown data\.pages option\(s\) \['n_group'\]"):
        PageConfig.from_dict({"n_group": 3})
    assert PageConfig(n_groups=4.0).n_groups == 4  # a whole float from a command line is fine
    with pytest.raises(ClickstreamError, match="'path', 'title', 'raw'"):
        PageConfig(identity="url")
