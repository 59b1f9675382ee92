"""The exit calibration (envs/exit_calibration.py): hazards by position, the calibrated
dynamics, the fit against known optima, the log-loss with offsets, and the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clickstream.errors import ClickstreamError
from envs.dynamics import MarkovDynamics
from envs.exit_calibration import (
    ExitCalibratedDynamics,
    ExitCalibrationConfig,
    calibrate_trained,
    calibrated,
    calibrated_log_loss,
    fit_exit_calibration,
    position_hazard,
)
from envs.sequences import SessionSequences, Vocabulary
from envs.training import mean_log_loss
from envs.visitor_model import ModelConfig, VisitorModel, calibrate_log_probs

# three pages; EXIT last
TOY = np.array(
    [
        [0.0, 0.5, 0.3, 0.2],
        [0.2, 0.0, 0.4, 0.4],
        [0.3, 0.3, 0.0, 0.4],
    ]
)
PAGES = ("/a", "/b", "/c")


def toy() -> MarkovDynamics:
    return MarkovDynamics(np.array([0.5, 0.3, 0.2]), TOY, PAGES)


def sessions_of_lengths(lengths: np.ndarray) -> SessionSequences:
    """Sessions on one page (/a) of the given lengths: only their lengths matter here."""
    return SessionSequences.from_lists([[0] * int(n) for n in lengths], exit_id=3)


def test_position_hazard_counts_exits_and_views_per_bucket() -> None:
    lengths = np.array([1, 1, 2, 3, 5])
    # views at positions 1..5: 5, 3, 2, 1, 1; exits at positions 1, 2, 3, 5: 2, 1, 1, 1
    exits, views = position_hazard(lengths, (1, 2, 4))
    assert exits.tolist() == [2, 2, 1] and views.tolist() == [5, 5, 2]
    cut = np.array([False, False, False, False, True])  # the 5-page session was cut short
    exits, views = position_hazard(lengths, (1, 2, 4), cut)
    assert exits.tolist() == [2, 2, 0] and views.tolist() == [5, 5, 2]


def test_calibrated_dynamics_scale_exit_odds_by_the_position_bucket() -> None:
    inner = toy()
    dyn = ExitCalibratedDynamics(inner, (1, 2, 4), (0.5, -1.0, 2.0))
    pages, state = dyn.start(3, torch.Generator().manual_seed(0))
    assert state.shape == (3, inner.state_dim + 1) and state[:, -1].tolist() == [1, 1, 1]
    for position, offset in [(1, 0.5), (2, -1.0), (3, -1.0), (4, 2.0), (9, 2.0)]:
        state[:, -1] = position
        p = dyn.next_probs(pages, state).double()
        q = inner.next_probs(pages, state[:, :-1]).double()
        assert torch.allclose(p.sum(1), torch.ones(3, dtype=p.dtype), atol=1e-6)
        odds = (p[:, -1] / (1 - p[:, -1])) / (q[:, -1] / (1 - q[:, -1]))
        assert torch.allclose(odds, torch.full_like(odds, np.exp(offset)), rtol=1e-5)
        # the pages keep their ratios
        assert torch.allclose(p[:, :-1] / p[:, :-1].sum(1, keepdim=True), q[:, :-1] / q[:, :-1].sum(1, keepdim=True), atol=1e-6)  # fmt: skip
        every = torch.arange(4).expand(3, -1)
        from_scores = torch.softmax(dyn.log_scores(pages, state, every).double(), dim=1)
        assert torch.allclose(from_scores, p, atol=1e-6)
    after = dyn.advance(torch.tensor([1, 2, 0]), state)
    assert after[:, -1].tolist() == [10, 10, 10]
    assert dyn.chains() is None  # position-dependent: no longer a first-order chain


def test_zero_offsets_change_nothing_and_none_is_no_calibration() -> None:
    inner = toy()
    same = ExitCalibratedDynamics(inner, (1, 3), (0.0, 0.0))
    pages, state = same.start(5, torch.Generator().manual_seed(1))
    assert torch.allclose(same.next_probs(pages, state), inner.next_probs(pages, state[:, :-1]))
    assert calibrated(inner, None) is inner
    assert isinstance(calibrated(inner, {"edges": [1], "offsets": [0.3]}), ExitCalibratedDynamics)
    with pytest.raises(ClickstreamError, match="2 buckets but 1 offsets"):
        ExitCalibratedDynamics(inner, (1, 2), (0.0,))


def test_fit_recovers_a_known_position_dependent_hazard() -> None:
    """Visitors who leave with probability 0.5 at every step; the data leave with 0.5 on the
    entry page and 0.1 afterwards (mean length 1 + 0.5 / 0.1 = 6). The offsets that make them
    agree are 0 and logit(0.1) - logit(0.5) = -2.197."""
    one_page = MarkovDynamics(np.array([1.0]), np.array([[0.5, 0.5]]), ("/a",))
    rng = np.random.default_rng(0)
    n = 20_000
    lengths = np.where(rng.random(n) < 0.5, 1, 1 + rng.geometric(0.1, n))
    target = SessionSequences.from_lists([[0] * int(k) for k in lengths], exit_id=1)
    cfg = ExitCalibrationConfig(edges=(1, 2, 4), iterations=3, sessions=8000, visitors=1024)
    result = fit_exit_calibration(lambda: one_page, target, cfg)
    truth = np.log(0.1 / 0.9) - np.log(0.5 / 0.5)
    # both the data and the simulation are samples: about 0.04 of noise each way
    assert result["offsets"][0] == pytest.approx(0.0, abs=0.12)
    assert result["offsets"][1:] == pytest.approx([truth, truth], abs=0.12)
    assert result["before"]["pages_per_session"] == pytest.approx(2.0, rel=0.03)
    assert result["after"]["pages_per_session"] == pytest.approx(lengths.mean(), rel=0.03)
    assert result["after"]["bounce_rate"] == pytest.approx(0.5, abs=0.015)
    assert len(result["pages_per_session_by_round"]) == 3
    # the same seed replays the fit exactly
    assert fit_exit_calibration(lambda: one_page, target, cfg)["offsets"] == result["offsets"]


def test_the_conversion_offset_scales_the_converting_pages_odds() -> None:
    """Page /c converts: its odds times e^c, EXIT's times e^o; /a and /b keep their ratio."""
    inner = toy()
    c, o = float(np.log(0.5)), 0.7
    dyn = ExitCalibratedDynamics(inner, (1,), (o,), converting=[2], conversion_offset=c)
    pages, state = dyn.start(4, torch.Generator().manual_seed(2))
    p = dyn.next_probs(pages, state).double()
    q = inner.next_probs(pages, state[:, :-1]).double()
    assert torch.allclose(p.sum(1), torch.ones(4, dtype=p.dtype), atol=1e-6)
    # against an untouched page: the odds ratio is exactly the factor
    a_or_b = torch.where(pages == 0, 1, 0)  # a page other than the current one and /c
    rows = torch.arange(4)
    untouched = p[rows, a_or_b] / q[rows, a_or_b]
    assert torch.allclose(p[:, 2] / q[:, 2] / untouched, torch.full((4,), 0.5, dtype=p.dtype), rtol=1e-5)  # fmt: skip
    assert torch.allclose(p[:, 3] / q[:, 3] / untouched, torch.full((4,), np.exp(o), dtype=p.dtype), rtol=1e-5)  # fmt: skip
    every = torch.arange(4).expand(4, -1)
    from_scores = torch.softmax(dyn.log_scores(pages, state, every).double(), dim=1)
    assert torch.allclose(from_scores, p, atol=1e-6)
    with pytest.raises(ClickstreamError, match=r"converting page ids outside 0\.\.2"):
        ExitCalibratedDynamics(inner, (1,), (0.0,), converting=[3])


def conversion_site() -> MarkovDynamics:
    """/a (entry) -> /a 0.4, /b 0.1, EXIT 0.5; /b (converting) -> /a 0.5, EXIT 0.5."""
    rows = np.array([[0.4, 0.1, 0.5], [0.5, 0.0, 0.5]])
    return MarkovDynamics(np.array([1.0, 0.0]), rows, ("/a", "/b"))


def test_fit_recovers_a_known_conversion_offset() -> None:
    """The data come from the same site with /b half as likely (c = log 0.5) and EXIT's odds
    1.5 times as high from the second page view on: the fit finds both, and the
    simulation then converts as often as the data."""
    truth = ExitCalibratedDynamics(conversion_site(), (1, 2), (0.0, np.log(1.5)), [1], np.log(0.5))  # fmt: skip
    from envs.fidelity import simulate_organic

    target = simulate_organic(truth, 20_000, max_steps=200, seed=7)
    converting = np.array([False, True])
    cfg = ExitCalibrationConfig(edges=(1, 2), iterations=4, sessions=20_000, visitors=2048)
    result = fit_exit_calibration(conversion_site, target, cfg, converting=converting)
    assert result["converting"] == [1]
    # both sides are samples of 20,000 sessions (about 0.05 of noise on each logit)
    assert result["conversion_offset"] == pytest.approx(np.log(0.5), abs=0.15)
    assert result["offsets"] == pytest.approx([0.0, np.log(1.5)], abs=0.15)
    target_rate = result["target"]["conversion_rate"]
    assert result["before"]["conversion_rate"] > target_rate + 0.02  # twice as likely before
    assert result["after"]["conversion_rate"] == pytest.approx(target_rate, abs=0.008)
    assert len(result["conversion_rate_by_round"]) == 4 and result["config"]["conversion"]
    # off, or a site without converting pages: the exits alone, as before
    off = ExitCalibrationConfig(edges=(1, 2), iterations=4, sessions=20_000, visitors=2048, conversion=False)  # fmt: skip
    plain = fit_exit_calibration(conversion_site, target, off, converting=converting)
    alone = fit_exit_calibration(conversion_site, target, off)
    assert "conversion_offset" not in plain and not plain["config"]["conversion"]
    assert plain["offsets"] == alone["offsets"]
    assert plain["after"]["conversion_rate"] > target_rate + 0.02
    assert alone["after"]["conversion_rate"] is None
    with pytest.raises(ClickstreamError, match="converting pages given for 3 pages"):
        fit_exit_calibration(conversion_site, target, cfg, converting=np.ones(3, dtype=bool))


class FixedModel:
    """Every step: P(/a) = P(/b) = 0.25, P(EXIT) = 0.5."""

    def iter_log_probs(self, seqs: SessionSequences):
        row = np.log([0.25, 0.25, 0.5])
        yield np.arange(seqs.n_steps), np.tile(row, (seqs.n_steps, 1))

    def iter_calibrated_log_probs(self, seqs, exit_offset, converting, conversion_offset):
        for idx, logp in self.iter_log_probs(seqs):  # one row: as VisitorModel does
            yield idx, calibrate_log_probs(logp, exit_offset[idx], converting, conversion_offset)


def test_calibrated_log_loss_by_hand() -> None:
    seqs = SessionSequences.from_lists([[0], [0, 1]], exit_id=2)  # steps: EXIT, /b, EXIT
    plain = -(np.log(0.5) + np.log(0.25) + np.log(0.5)) / 3
    assert calibrated_log_loss(FixedModel(), seqs, None) == pytest.approx(plain)
    # positions 1, 1, 2: offsets 0 then log 3 (EXIT's odds x3 at position 2: P(EXIT) = 0.75)
    cal = {"edges": [1, 2], "offsets": [0.0, float(np.log(3.0))]}
    by_hand = -(np.log(0.5) + np.log(0.25) + np.log(0.75)) / 3
    assert calibrated_log_loss(FixedModel(), seqs, cal) == pytest.approx(by_hand)
    # /b converts, its odds x2 everywhere: first step P(EXIT) = 0.5 / 1.25, then
    # P(/b) = 0.5 / 1.25, then at position 2 P(EXIT) = 1.5 / 2.25
    both = cal | {"converting": [1], "conversion_offset": float(np.log(2.0))}
    by_hand = -(np.log(0.5 / 1.25) + np.log(0.5 / 1.25) + np.log(1.5 / 2.25)) / 3
    assert calibrated_log_loss(FixedModel(), seqs, both) == pytest.approx(by_hand)


@pytest.fixture
def gru_model() -> VisitorModel:
    torch.manual_seed(0)
    vocab = Vocabulary(PAGES, ("x",), np.zeros(3, dtype=np.int64))
    cfg = ModelConfig(embedding_dim=8, hidden_size=8, group_dim=4, dropout=0.0)
    return VisitorModel(vocab, cfg)


def test_calibrate_trained_fits_records_and_sets_the_model(gru_model: VisitorModel) -> None:
    from envs.dynamics import GRUDynamics

    seqs = SessionSequences.from_lists([[0, 1, 2], [1], [2, 0]] * 40, exit_id=3)
    splits = {"train": seqs, "valid": seqs, "test": seqs}
    entry = np.array([1 / 3, 1 / 3, 1 / 3])
    assert calibrate_trained(gru_model, lambda: GRUDynamics(gru_model, entry), splits, None) is None
    assert gru_model.exit_calibration is None
    options = {"edges": [1, 2, 3], "iterations": 2, "sessions": 2000, "visitors": 512}
    result = calibrate_trained(gru_model, lambda: GRUDynamics(gru_model, entry), splits, options)
    assert gru_model.exit_calibration == {"edges": [1, 2, 3], "offsets": result["offsets"]}
    assert result["target"]["pages_per_session"] == pytest.approx(2.0)
    assert result["after"]["pages_per_session"] == pytest.approx(2.0, rel=0.05)
    assert result["log_loss"]["valid"]["model"] == pytest.approx(mean_log_loss(gru_model, seqs))
    assert set(result["log_loss"]) == {"valid", "test"}
    # with a converting page the conversion offset is fitted and kept with the model
    converting = np.array([False, False, True])
    result = calibrate_trained(
        gru_model, lambda: GRUDynamics(gru_model, entry), splits, options, converting
    )
    assert gru_model.exit_calibration == {
        "edges": [1, 2, 3],
        "offsets": result["offsets"],
        "converting": [2],
        "conversion_offset": result["conversion_offset"],
    }
    assert result["target"]["conversion_rate"] == pytest.approx(2 / 3)
    assert result["after"]["conversion_rate"] == pytest.approx(2 / 3, abs=0.03)
    assert result["log_loss"]["valid"]["calibrated"] == pytest.approx(
        calibrated_log_loss(gru_model, seqs, gru_model.exit_calibration)
    )


def test_the_calibration_travels_with_the_checkpoint(gru_model: VisitorModel, tmp_path: Path) -> None:  # fmt: skip
    gru_model.exit_calibration = {"edges": [1, 2, 5], "offsets": [0.1, -0.2, 1.5]}
    path = gru_model.save(tmp_path / "model.pt")
    assert VisitorModel.load(path).exit_calibration == gru_model.exit_calibration
    gru_model.exit_calibration |= {"converting": [2], "conversion_offset": -0.4}
    path = gru_model.save(tmp_path / "converting.pt")
    assert VisitorModel.load(path).exit_calibration == gru_model.exit_calibration
    gru_model.exit_calibration = None
    assert VisitorModel.load(gru_model.save(tmp_path / "plain.pt")).exit_calibration is None


@pytest.mark.parametrize(
    "bad",
    [
        {"edges": [1, 2], "offsets": [0.1]},
        {"edges": [2, 3], "offsets": [0.1, 0.2]},
        {"edges": [1, 1], "offsets": [0.1, 0.2]},
        {"edges": [1, 2], "offsets": [0.1, float("nan")]},
        {"offsets": [0.1]},
        {"edges": [1], "offsets": [0.1], "converting": [3], "conversion_offset": 0.1},
        {"edges": [1], "offsets": [0.1], "converting": [], "conversion_offset": 0.1},
        {"edges": [1], "offsets": [0.1], "converting": [1], "conversion_offset": float("inf")},
        {"edges": [1], "offsets": [0.1], "conversion_offset": 0.1},
        "os.system('echo hi')",
    ],
)
def test_a_malformed_calibration_in_a_checkpoint_is_refused(
    gru_model: VisitorModel, tmp_path: Path, bad: object
) -> None:
    gru_model.exit_calibration = bad  # type: ignore[assignment]
    path = gru_model.save(tmp_path / "model.pt")
    with pytest.raises(ClickstreamError, match="malformed exit_calibration"):
        VisitorModel.load(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"edges": [2, 3]}, "must increase from 1"),
        ({"edges": [1, 3, 3]}, "must increase from 1"),
        ({"iterations": 0}, r"exit_calibration\.iterations must be a whole number >= 1"),
        ({"sessions": 2.5}, r"exit_calibration\.sessions must be a whole number"),
        ({"edges": [1, "2"]}, r"exit_calibration\.edges\[1\] must be a whole number"),
        ({"edges": "1, 2"}, r"exit_calibration\.edges must be a list"),
        ({"seed": -1}, r"exit_calibration\.seed must be a whole number"),
        ({"edges": [1, 300]}, "beyond max_steps"),
        ({"rounds": 3}, "rounds"),
        ({"conversion": "yes"}, "conversion must be true or false"),
    ],
)
def test_bad_settings_are_named(options: dict, message: str) -> None:
    with pytest.raises(ClickstreamError, match=message):
        ExitCalibrationConfig.from_dict(options)


@pytest.mark.gpu
def test_calibrating_a_cuda_model_simulates_on_cuda_and_keeps_it_there(
    gru_model: VisitorModel,
) -> None:
    from envs.dynamics import GRUDynamics

    gru_model.net.to("cuda")
    gru_model.device = torch.device("cuda")
    seqs = SessionSequences.from_lists([[0, 1, 2], [1], [2, 0]] * 40, exit_id=3)
    splits = {"train": seqs, "valid": seqs}
    entry = np.array([1 / 3, 1 / 3, 1 / 3])
    options = {"edges": [1, 2, 3], "iterations": 2, "sessions": 2000, "visitors": 512}
    result = calibrate_trained(gru_model, lambda: GRUDynamics(gru_model, entry), splits, options)
    assert result["after"]["pages_per_session"] == pytest.approx(2.0, rel=0.05)
    assert next(gru_model.net.parameters()).is_cuda
