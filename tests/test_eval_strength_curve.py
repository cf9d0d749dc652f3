"""python -m plainsight.evaluate.strength_curve: one table per corpus, sorted by strength."""

import json

from plainsight.evaluate import strength_curve


def result(strength, uar, wer=0.1, privacy="neutralize"):
    masker = {"privacy": privacy, "neutralize_strength": strength}
    if privacy == "mask":
        masker = {}
    report = {"uar": uar}
    dnsmos = {k: {"mean": 3.0 - strength} for k in ("sig", "bak", "ovrl")}
    return {
        "corpus": "emodb",
        "clips": 7,
        "chance_uar": 1 / 7,
        "masker": masker,
        "whitebox_models": ["emodb-compact"],
        "whitebox": {"clean": {"emodb-compact": {"uar": 0.7}}, "masked": {"emodb-compact": report}},
        "transfer_models": {"emodb-adaptive-x": "adaptive, compact"},
        "transfer": {
            "clean": {"emodb-adaptive-x": {"uar": 0.6}},
            "masked": {"emodb-adaptive-x": {"uar": uar + 0.1}},
        },
        "asr": {"clips": 3, "clean": {"wer": 0.1}, "masked": {"wer": wer}},
        "quality": {
            "pesq_stoi_clips": 7,
            "masked": {"stoi": {"median": 0.95 - strength / 10}},
            "dnsmos": {"clean": dnsmos, "masked": dnsmos},
        },
    }


def test_table_sorted_by_strength_with_mask_tier_as_zero(tmp_path, capsys):
    paths = []
    for i, r in enumerate(
        [result(1.0, 0.2, 0.15), result(0, 0.5, privacy="mask"), result(0.5, 0.3)]
    ):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    assert strength_curve.main([str(p) for p in paths] + ["--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "| attacker | role | clean | 0 | 0.5 | 1 |" in out
    assert "| compact | white-box | 70.0 | 50.0 | 30.0 | 20.0 |" in out
    assert "| adaptive-x | adaptive, compact | 60.0 | 60.0 | 40.0 | 30.0 |" in out
    assert "| Whisper WER % (3 clips) | cost | 10.0 | 10.0 | 10.0 | 15.0 |" in out
    assert "0.850" in out and (tmp_path / "c.png").stat().st_size > 0


def test_unreadable_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert strength_curve.main([str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err
