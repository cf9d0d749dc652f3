"""Issue 9 §3's fallback: the transfer budget curve of every held-out member and the measured
SNR at which each reaches chance + 10 (and 15 points below its noise control).

Fast and torch-free: a hand-made result for the interpolation, toy ONNX models for the run.
"""

from __future__ import annotations

import numpy as np
import pytest
from plainsight.evaluate.report import budget_reach, curve_tables, markdown, plots
from test_eval_live_path import TOY_MASKER, toy_clips
from test_runtime_toymodel import build_toy_model


def _row(setting, snr, pesq, masked, noise):
    return {
        "snr_db_setting": setting,
        "median_snr_db": snr,
        "median_pesq_wb": pesq,
        "median_stoi": 0.99,
        "whitebox": {"wb": {"uar": 0.2}},
        "noise_whitebox": {"wb": {"uar": 0.7}},
        "transfer": {name: {"uar": u} for name, u in masked.items()},
        "noise_transfer": {name: {"uar": u} for name, u in noise.items()},
    }


def _result(rows, chance=0.25):
    return {"chance_uar": chance, "curves": {"steps": [], "budget": rows}}


def test_reach_is_interpolated_between_the_last_failing_and_first_passing_budget():
    rows = [  # given strongest first: the order must not matter
        _row(20, 21.0, 2.0, {"a": 0.30, "b": 0.60, "c": 0.33}, {"a": 0.60, "b": 0.60, "c": 0.70}),
        _row(40, 41.0, 4.0, {"a": 0.55, "b": 0.60, "c": 0.30}, {"a": 0.60, "b": 0.60, "c": 0.70}),
        _row(30, 31.0, 3.0, {"a": 0.45, "b": 0.60, "c": 0.31}, {"a": 0.60, "b": 0.60, "c": 0.70}),
    ]
    reach = budget_reach(_result(rows))  # limit: 0.35
    a, b, c = reach["a"], reach["b"], reach["c"]
    # a: 0.45 at 31 dB fails, 0.30 at 21 dB passes: 0.35 is 2/3 of the way -> 24.33 dB
    assert a["chance10_snr_db"] == pytest.approx(31.0 - 10.0 * (0.10 / 0.15))
    assert a["chance10_pesq_wb"] == pytest.approx(2.0 + (a["chance10_snr_db"] - 21.0) / 10.0)
    # 15 below noise: gap 0.05 at 41, 0.15 at 31 dB -> passes exactly at 31 dB
    assert a["below_noise15_snr_db"] == pytest.approx(31.0)
    assert a["both_snr_db"] == pytest.approx(a["chance10_snr_db"])  # the later of the two
    assert a["min_uar"] == 0.30 and a["min_uar_snr_db"] == 21.0
    # b never moves: nothing reached, reported as None (the table prints '-')
    assert b["chance10_snr_db"] is None and b["both_snr_db"] is None
    # c passes already at the weakest budget
    assert c["chance10_snr_db"] == 41.0 and c["both_snr_db"] == 41.0
    table = "\n".join(curve_tables(_result(rows)))
    assert "| b | - | - | - |" in table


def _toy_config(whitebox, attacker, n_clips: int, **kw):
    from plainsight.evaluate.run import EvalConfig

    masker = {"model": str(whitebox), "objective": "neutral", **TOY_MASKER}
    return EvalConfig(
        corpus="toy",
        data="",
        masker=masker,
        asr=False,
        dnsmos=False,
        progress=False,
        clips=toy_clips(n_clips),
        attackers=str(attacker),
        **kw,
    )


@pytest.fixture
def toy_panel(tmp_path):
    whitebox = build_toy_model(tmp_path / "whitebox", seed=0, name="toy")
    attacker = build_toy_model(tmp_path / "attacker", seed=3, name="toy-attacker")
    return whitebox, attacker


def test_evaluate_runs_a_chosen_budget_curve_without_the_steps_curve(toy_panel, tmp_path):
    from plainsight.evaluate.run import evaluate, json_ready

    whitebox, attacker = toy_panel
    result = json_ready(
        evaluate(_toy_config(whitebox, attacker, 3, steps_curve=(), budget_curve=(40.0, 10.0)))
    )
    curves = result["curves"]
    assert curves["steps"] == []
    assert [r["snr_db_setting"] for r in curves["budget"]] == [40.0, 10.0]
    snrs = [r["median_snr_db"] for r in curves["budget"]]
    assert snrs[0] > snrs[1] + 20  # the budgets were really applied
    assert "toy-attacker" in budget_reach(result)
    written = {p.name for p in plots(result, tmp_path)}
    assert "accuracy_vs_budget.png" in written and "accuracy_vs_steps.png" not in written
    assert "Budget each held-out model needs" in markdown(result, "cmd")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--budget-curve", "35,abc", "comma-separated numbers"),
        ("--budget-curve", "none", "--no-curves"),
        ("--budget-curve", "120", "must be in"),
        ("--steps-curve", "0", "must be in"),
    ],
)
def test_bad_curve_flags_are_one_line_errors(tmp_path, capsys, monkeypatch, flag, value, message):
    from plainsight.cli import main

    (tmp_path / "data" / "emodb").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    rc = main(["evaluate", "--corpus", "emodb", "--data", str(tmp_path / "data"), flag, value])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "eval-out").exists()


def test_listener_offset_moves_every_listeners_window_grid(toy_panel, monkeypatch):
    """--listener-offset-ms: white-box and attackers hear each clip from the offset on (their
    grid is not the masker's); the result records it; 0 is the historical aligned protocol."""
    from plainsight.evaluate import pipeline as P
    from plainsight.evaluate.run import evaluate, json_ready

    class Recorder:
        name = "recorder"

        def report(self, audios, labels):
            self.lengths = [len(a) for a in audios]
            return {"uar": 0.0}

    inner = Recorder()
    listener = P.OffsetListener(inner, 1600)
    listener.report([np.zeros(5000), np.zeros(1000)], ["a", "b"])
    assert inner.lengths == [3400, 1] and listener.name == "recorder"

    heard = []
    original = P.Scorer.clip_logits

    def recording(self, audios):
        heard.extend(len(a) for a in audios)
        return original(self, audios)

    monkeypatch.setattr(P.Scorer, "clip_logits", recording)
    whitebox, attacker = toy_panel
    results, lengths = {}, {}
    for offset in (0.0, 300.0):
        heard.clear()
        cfg = _toy_config(
            whitebox, attacker, 4, curves=False, listener_offset_ms=offset, framing_ms=()
        )
        results[offset] = json_ready(evaluate(cfg))
        lengths[offset] = list(heard)
    assert results[300.0]["listener_offset_ms"] == 300.0
    assert results[0.0]["listener_offset_ms"] == 0.0
    assert "starts 300 ms into each clip" in markdown(results[300.0], "cmd")
    # every listener call (white-box and attacker, every condition) heard 4800 samples less
    assert len(lengths[0.0]) == len(lengths[300.0]) > 0
    assert all(a - b == 4800 for a, b in zip(lengths[0.0], lengths[300.0], strict=True))


def test_whitebox_is_also_scored_on_later_listener_grids(toy_panel):
    """Every aligned run adds the white-box model heard from 5 and 250 ms on, with its own
    chance +-3 target rows; a run whose listeners are already offset does not."""
    from plainsight.evaluate.run import evaluate, json_ready

    whitebox, attacker = toy_panel
    result = json_ready(evaluate(_toy_config(whitebox, attacker, 4, curves=False)))
    assert [row["offset_ms"] for row in result["framing"]] == [5.0, 250.0]
    for row in result["framing"]:
        assert set(row["masked"]) == {"toy"}  # white-box only, not the attacker
        assert set(row) >= {"clean", "masked", "noise"}
    late = result["framing"][1]["clean"]["toy"]["uar"]
    aligned = result["whitebox"]["clean"]["toy"]["uar"]
    assert 0.0 <= late <= 1.0 and 0.0 <= aligned <= 1.0
    target = "whitebox toy UAR within chance +/- 3 pts (listener grid +250 ms)"
    assert result["targets"][target]["value"] == result["framing"][1]["masked"]["toy"]["uar"]
    text = markdown(result, "cmd")
    assert "| toy | +250 ms |" in text and "| toy | evaluation's |" in text

    offset = json_ready(
        evaluate(_toy_config(whitebox, attacker, 4, curves=False, listener_offset_ms=100.0))
    )
    assert "framing" not in offset
    assert not any("listener grid" in k for k in offset["targets"])
