"""`plainsight evaluate --panel dev|final|all` scores exactly that panel's members, ONNX graphs
and numpy statistics members alike, plus the adaptive attackers beside final/all (issue 9).

Fast and torch-free: toy ONNX models and a hand-written MFCC + linear statistics member.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from plainsight.evaluate import panel as P
from test_eval_live_path import TOY_MASKER, toy_clips
from test_runtime_toymodel import TOY_CLASSES, build_toy_model


def _onnx_member(root: Path, name: str, seed: int, **manifest_extra) -> str:
    directory = build_toy_model(root / f"toy-{name}", seed=seed, name=f"toy-{name}")
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text()) | {"role": "attacker"} | manifest_extra
    path.write_text(json.dumps(manifest))
    return f"toy-{name}"


def _stats_member(root: Path, name: str, panel: str, seed: int) -> str:
    """An MFCC-functionals + linear member as the real ones are stored (.npy + sha256)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "coef": rng.normal(0, 1, (len(TOY_CLASSES), 160)),
        "intercept": rng.normal(0, 1, len(TOY_CLASSES)),
        "scaler_mean": np.zeros(160),
        "scaler_scale": np.full(160, 10.0),
    }
    directory = root / f"toy-{name}"
    directory.mkdir(parents=True)
    files = {}
    for key, value in arrays.items():
        np.save(directory / f"{key}.npy", value.astype(np.float32))
        digest = hashlib.sha256((directory / f"{key}.npy").read_bytes()).hexdigest()
        files[f"{key}.npy"] = {"sha256": digest}
    manifest = {
        "format": P.STATS_FORMAT,
        "name": f"toy-{name}",
        "corpus": "toy",
        "role": "attacker",
        "panel": panel,
        "family": "mfcc-lr",
        "classes": TOY_CLASSES,
        "features_kind": "mfcc-functionals",
        "classifier": {"type": "linear"},
        "files": files,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return f"toy-{name}"


@pytest.fixture
def panel_root(tmp_path):
    """One member of every kind: dev and final ONNX, dev and final statistics, adaptive, and a
    pre-panel attacker (no "panel" key: counts as dev)."""
    from plainsight.masker import Masker

    root = tmp_path / "export" / "artifacts"  # the repository layout (see report fallback)
    whitebox = build_toy_model(tmp_path / "whitebox", seed=0, name="toy")
    settings = Masker(model=str(whitebox), **TOY_MASKER_KW).settings()
    members = {
        "dev": [
            _onnx_member(root, "attacker-dev-lin-s0", 1, panel="dev", family="lin"),
            _stats_member(root, "attacker-dev-mfcc-lr-s0", "dev", 2),
            _onnx_member(root, "attacker-lin-s9", 3),
        ],
        "final": [
            _onnx_member(root, "attacker-final-lin-s1", 4, panel="final", family="lin"),
            _stats_member(root, "attacker-final-mfcc-lr-s1", "final", 5),
        ],
        "adaptive": [
            _onnx_member(
                root,
                "adaptive-lin-s2",
                6,
                role="adaptive",
                family="lin",
                trained_on_masker=settings | {"threads": 4},  # threads do not change audio
            ),
            _onnx_member(root, "adaptive-old-lin-s3", 7, role="adaptive", family="lin"),
        ],
    }
    # Trained against another masker (a 20 dB budget): never scored beside this one.
    other = settings | {"snr_db": 20.0, "eps": None}
    _onnx_member(root, "adaptive-other-lin-s4", 8, role="adaptive", trained_on_masker=other)
    # Same settings, but trained against other masking code (the masker changed since).
    old_code = settings | {"masker_source_sha256": "0" * 64}
    _onnx_member(root, "adaptive-oldcode-lin-s6", 10, role="adaptive", trained_on_masker=old_code)
    # Exported before the manifest recorded it: the training report (via the manifest's
    # checkpoint path) says which masker; this one was trained against the other masker too.
    report = tmp_path / "export" / "checkpoints" / "toy" / "adaptive-rep-lin-s5.report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"masker": other | {"cache_key": "abc"}}))
    ckpt = {"path": "export/checkpoints/toy/adaptive-rep-lin-s5.pt"}
    _onnx_member(root, "adaptive-rep-lin-s5", 9, role="adaptive", checkpoint=ckpt)
    return root, whitebox, members


TOY_MASKER_KW = {"objective": "neutral", **TOY_MASKER}


def _evaluate(panel, root, whitebox):
    from plainsight.evaluate.run import EvalConfig, evaluate, json_ready

    cfg = EvalConfig(
        corpus="toy",
        data="",
        masker={"model": str(whitebox), **TOY_MASKER_KW},
        asr=False,
        curves=False,
        progress=False,
        dnsmos=False,  # not what these tests check; it costs seconds per call
        clips=toy_clips(3),
        panel=panel,
        panel_root=root,
    )
    return json_ready(evaluate(cfg))


@pytest.mark.parametrize(
    ("panel", "groups"),
    [("dev", ["dev"]), ("final", ["final", "adaptive"]), ("all", ["dev", "final", "adaptive"])],
)
def test_evaluate_panel_scores_every_member_of_that_panel(panel_root, panel, groups):
    root, whitebox, members = panel_root
    result = _evaluate(panel, root, whitebox)
    expected = sorted(name for g in groups for name in members[g])
    assert result["panel"] == panel
    assert sorted(result["transfer_models"]) == expected
    for condition in ("clean", "masked", "noise"):
        reports = result["transfer"][condition]
        assert sorted(reports) == expected
        assert all(r["n"] == 3 for r in reports.values())
    roles = result["transfer_models"]
    assert roles.get("toy-attacker-lin-s9", "dev panel, linear").startswith("dev panel")
    if "final" in groups:
        assert roles["toy-attacker-final-mfcc-lr-s1"] == "final panel, mfcc-lr"
        assert roles["toy-adaptive-lin-s2"] == "adaptive, lin"
        assert roles["toy-adaptive-old-lin-s3"].endswith("training masker not recorded")
    # The adaptive attacker is reported without a target; every other member has one.
    targeted = [k for k in result["targets"] if k.startswith("attacker ")]
    assert sorted(targeted) == sorted(
        f"attacker {n} UAR <= chance + 10 pts and >= 15 pts below noise control"
        for n in expected
        if "adaptive" not in n
    )
    assert result["whitebox_models"] == ["toy"]
    for key in targeted:  # both halves of the issue-9 attacker target decide "ok"
        t = result["targets"][key]
        within = t["value"] <= t["limit"] + 1e-12
        assert t["ok"] == (within and t["beats_noise_by"] >= 0.15 - 1e-12)


def test_stats_member_scores_are_its_own(panel_root):
    """The statistics member's masked report is StatsScorer's report of the masked audio."""
    from plainsight.evaluate.pipeline import mask_clips
    from plainsight.masker import Masker

    root, whitebox, members = panel_root
    result = _evaluate("final", root, whitebox)
    clips = toy_clips(3)
    masker = Masker(model=str(whitebox), objective="neutral", **TOY_MASKER)
    masked = mask_clips(masker, clips).audios
    name = "toy-attacker-final-mfcc-lr-s1"
    direct = P.StatsScorer(root / name).report(masked, [c.utt.label for c in clips])
    assert result["transfer"]["masked"][name]["confusion"] == direct["confusion"]


def test_empty_panel_is_an_error(tmp_path):
    whitebox = build_toy_model(tmp_path / "whitebox", seed=0, name="toy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no final panel members"):
        _evaluate("final", tmp_path / "empty", whitebox)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--panel", "final", "--attackers", "x"], "exclude each other"),
        (["--sweep", "--panel", "final"], "only --panel dev"),
    ],
)
def test_panel_cli_refusals_are_one_line(tmp_path, capsys, options, message):
    from plainsight.cli import main

    (tmp_path / "emodb").mkdir()
    rc = main(["evaluate", "--corpus", "emodb", "--data", str(tmp_path), *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_evaluate_passes_the_privacy_tier_to_the_masker(tmp_path):
    """--privacy neutralize reaches Masker: the settings and report say so, and the masked
    clips differ from the mask tier's (neutralising moves far more than the L-inf budget)."""
    from plainsight.evaluate.report import markdown
    from plainsight.evaluate.run import EvalConfig, evaluate, json_ready

    whitebox = build_toy_model(tmp_path / "whitebox", seed=0, name="toy")
    snrs = {}
    for privacy, extra in (("mask", {}), ("neutralize", {"neutralize_strength": 1.0})):
        cfg = EvalConfig(
            corpus="toy",
            data="",
            masker={"model": str(whitebox), "objective": "neutral", "privacy": privacy}
            | extra
            | TOY_MASKER,
            asr=False,
            curves=False,
            progress=False,
            dnsmos=False,
            clips=toy_clips(2),
            attackers=str(whitebox),
        )
        result = json_ready(evaluate(cfg))
        snrs[privacy] = result["quality"]["masked"]["snr_db"]["median"]
        assert result["masker"].get("privacy", "mask") == privacy
        assert ("privacy tier neutralize (strength 1)" in markdown(result, "cmd")) == (
            privacy == "neutralize"
        )
    assert snrs["neutralize"] < snrs["mask"] - 3, snrs


def test_neutralize_strength_needs_the_neutralize_tier(tmp_path, capsys):
    from plainsight.cli import main

    (tmp_path / "emodb").mkdir()
    argv = ["evaluate", "--corpus", "emodb", "--data", str(tmp_path)]
    rc = main([*argv, "--neutralize-strength", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs --privacy neutralize" in err[0], err


def test_panel_table_has_a_row_and_verdict_per_member(panel_root):
    from plainsight.evaluate.report import panel_table

    root, whitebox, members = panel_root
    result = _evaluate("all", root, whitebox)
    table = panel_table([result])
    rows = {line.split(" (")[0].strip("| "): line for line in table.splitlines() if "->" in line}
    assert sorted(rows) == sorted(["toy", *(n for g in members.values() for n in g)])
    assert rows["toy-adaptive-lin-s2"].rstrip(" |").endswith("| -")  # no target
    assert "toy-adaptive-other-lin-s4" not in rows and "toy-adaptive-rep-lin-s5" not in rows
    assert "toy-adaptive-oldcode-lin-s6" not in rows
    for name in members["final"] + members["dev"]:
        verdict = rows[name].rstrip(" |").rsplit("| ", 1)[1]
        assert verdict == "yes" or verdict.startswith("NO (")


def test_adaptive_members_left_out_are_named_with_the_reason(panel_root):
    """An adaptive attacker trained against another masker is not scored, and the report says
    which ones and why (a missing adaptive row must never look like a clean bill)."""
    from plainsight.evaluate.report import markdown

    root, whitebox, _ = panel_root
    result = _evaluate("final", root, whitebox)
    left_out = {e["member"]: e["reason"] for e in result["adaptive_not_scored"]}
    assert sorted(left_out) == [
        "toy-adaptive-oldcode-lin-s6",
        "toy-adaptive-other-lin-s4",
        "toy-adaptive-rep-lin-s5",
    ]
    assert "eps" in left_out["toy-adaptive-other-lin-s4"]
    assert "snr_db" in left_out["toy-adaptive-other-lin-s4"]
    assert "snr_db" in left_out["toy-adaptive-rep-lin-s5"]
    assert "masking code" in left_out["toy-adaptive-oldcode-lin-s6"]
    text = markdown(result, "plainsight evaluate ...")
    assert "toy-adaptive-other-lin-s4" in text and "not scored" in text
    assert _evaluate("dev", root, whitebox)["adaptive_not_scored"] == []  # dev has none


def test_no_fitting_adaptive_member_is_said_plainly(tmp_path):
    """--panel final with adaptive members that all fit other maskers: the report says no
    adaptive attacker was scored."""
    from plainsight.evaluate.report import markdown
    from plainsight.masker import Masker

    root = tmp_path / "export" / "artifacts"
    whitebox = build_toy_model(tmp_path / "whitebox", seed=0, name="toy")
    settings = Masker(model=str(whitebox), **TOY_MASKER_KW).settings()
    _onnx_member(root, "attacker-final-lin-s1", 4, panel="final", family="lin")
    other = settings | {"steps": 3}
    _onnx_member(root, "adaptive-other-lin-s4", 8, role="adaptive", trained_on_masker=other)
    result = _evaluate("final", root, whitebox)
    assert not any(r.startswith("adaptive") for r in result["transfer_models"].values())
    assert [e["member"] for e in result["adaptive_not_scored"]] == ["toy-adaptive-other-lin-s4"]
    assert "No adaptive attacker fits this masker" in markdown(result, "cmd")
