"""The held-out attacker panel: new families, forward export parity, numpy statistics scorers,
cross-corpus label mapping, dev/final selection (issue 9 section 1)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from plainsight.evaluate import panel as P
from plainsight.evaluate.pipeline import Scorer, find_attackers
from plainsight.manifest import ManifestError, load_model_dir

torch = pytest.importorskip("torch")
sklearn = pytest.importorskip("sklearn")

from plainsight_export import data as D  # noqa: E402
from plainsight_export import models  # noqa: E402
from plainsight_export.export import export_model_dir  # noqa: E402
from plainsight_export.stats_members import classifier_params, write_member  # noqa: E402


def _features(n=120, dim=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(0, 1.5, (classes, dim))
    return centres[y] + rng.normal(0, 1.0, (n, dim)), y


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_svc_numpy_scores_equal_sklearn(kernel):
    from sklearn.svm import SVC

    x, y = _features()
    clf = SVC(kernel=kernel, C=0.5, gamma="scale").fit(x, y)
    settings, arrays = classifier_params(clf)
    ours = P.svc_scores(x, settings | arrays)
    np.testing.assert_allclose(ours, clf.decision_function(x), atol=1e-9)
    assert (ours.argmax(1) == clf.predict(x)).all()


def test_linear_numpy_scores_equal_sklearn():
    from sklearn.linear_model import LogisticRegression

    x, y = _features(classes=5)
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    settings, arrays = classifier_params(clf)
    assert settings["type"] == "linear"
    np.testing.assert_allclose(
        P.linear_scores(x, arrays), clf.decision_function(x), rtol=1e-9, atol=1e-9
    )


def _tone(freq, seconds, rate=16000, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _stats_member(tmp_path, name="emodb-attacker-final-mfcc-svm-s0", panel="final", **extra):
    """A tiny MFCC-functionals + RBF SVC member written like the real ones."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    classes = ["anger", "sadness", "neutral"]
    audios = [_tone(f, 1.5 + 0.5 * k, seed=k) for k, f in enumerate([150, 400, 900] * 3)]
    labels = np.arange(9) % 3
    feats = np.stack([P.mfcc_functionals(P.clip_windows(a, P.WINDOW)[0]) for a in audios])
    scaler = StandardScaler().fit(feats)
    clf = SVC(kernel="rbf", C=1.0, gamma="scale").fit(scaler.transform(feats), labels)
    settings, arrays = classifier_params(clf)
    arrays |= {"scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_}
    manifest = {
        "format": P.STATS_FORMAT,
        "name": name,
        "corpus": "emodb",
        "role": "attacker",
        "panel": panel,
        "family": "mfcc-svm",
        "classes": classes,
        "features_kind": "mfcc-functionals",
        "classifier": settings,
        "sample_rate": 16000,
        "window_samples": P.WINDOW,
        **extra,
    }
    write_member(tmp_path / name, manifest, arrays)
    return tmp_path / name, audios, [classes[i] for i in labels], clf, scaler


def test_stats_scorer_matches_sklearn_and_checks_hashes(tmp_path):
    directory, audios, labels, clf, scaler = _stats_member(tmp_path)
    scorer = P.StatsScorer(directory)
    assert (scorer.name, scorer.family) == ("emodb-attacker-final-mfcc-svm-s0", "mfcc-svm")
    # Clips of <= 2 s are one window: the clip score is sklearn's score of that window.
    short = [a for a in audios if len(a) <= P.WINDOW]
    feats = np.stack([P.mfcc_functionals(P.clip_windows(a, P.WINDOW)[0]) for a in short])
    expected = clf.decision_function(scaler.transform(feats))
    np.testing.assert_allclose(scorer.clip_logits(short), expected, atol=1e-3)
    report = scorer.report(audios, labels)
    assert report["n"] == 9 and report["uar"] == pytest.approx(1.0)
    # A modified parameter file is refused.
    path = directory / "dual_coef.npy"
    arr = np.load(path)
    arr[0, 0] += 1.0
    np.save(path, arr)
    with pytest.raises(ManifestError):
        P.StatsScorer(directory)


def _onnx_member(tmp_path, arch, classes, **ckpt_extra):
    torch.manual_seed(0)
    model = models.build_model(arch, len(classes), models.default_features(arch)).eval()
    ckpt = {
        "arch": arch,
        "classes": classes,
        "features": models.default_features(arch).to_dict(),
        "window_samples": 32000,
        "corpus": "ravdess",
        "role": "attacker",
        "seed": 0,
        **ckpt_extra,
    }
    name = f"emodb-attacker-dev-{arch}-s0"
    export_model_dir(model, ckpt, tmp_path / name, name, ("forward",), ("onnx",))
    return model, tmp_path / name


@pytest.mark.parametrize("arch", models.PANEL_ARCHS)
def test_panel_family_forward_graph_matches_torch(tmp_path, arch):
    classes = ["anger", "sadness", "neutral", "fear"]
    model, directory = _onnx_member(tmp_path, arch, classes, panel="dev", family=arch)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["panel"] == "dev" and sorted(manifest["files"]) == ["forward.onnx"]
    scorer = Scorer(load_model_dir(directory))
    x = np.stack([_tone(200, 2.0), _tone(700, 2.0, seed=1), np.zeros(32000, np.float32)])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(scorer._logits(x) - expected).max() <= 1e-4


def test_cross_corpus_scorer_maps_labels(tmp_path):
    """A RAVDESS-trained member scored on EmoDB: EmoDB labels map to its classes, boredom
    (not shared) is left out, and the mapped clips are scored as the model's classes."""
    classes = P.shared_classes("ravdess")
    label_map = P.shared_label_map("emodb", "ravdess")
    assert label_map["happiness"] == "happy" and "boredom" not in label_map
    _, directory = _onnx_member(tmp_path, "cnn2", classes, label_map=label_map, scored_on="emodb")
    scorer = Scorer(load_model_dir(directory))
    audios = [_tone(200 + 50 * k, 1.5, seed=k) for k in range(4)]
    labels = ["anger", "boredom", "sadness", "neutral"]
    report = scorer.report(audios, labels)
    assert report["n"] == 3
    support = np.asarray(report["confusion"]).sum(1)
    assert [classes[i] for i in np.flatnonzero(support)] == ["angry", "sad", "neutral"]
    stats_dir, audios2, labels2, _, _ = _stats_member(
        tmp_path, label_map={"anger": "anger", "sadness": "sadness"}
    )
    assert P.StatsScorer(stats_dir).report(audios2, labels2)["n"] == 6


def test_load_panel_splits_dev_and_final(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAINSIGHT_ARTIFACTS", str(tmp_path))
    _onnx_member(tmp_path, "wav1d", ["anger", "neutral"], panel="dev", family="wav1d")
    _stats_member(tmp_path)
    dev, final = P.load_panel("emodb", "dev"), P.load_panel("emodb", "final")
    assert [(s.name, s.family) for s in dev] == [("emodb-attacker-dev-wav1d-s0", "wav1d")]
    assert [(s.name, s.family) for s in final] == [("emodb-attacker-final-mfcc-svm-s0", "mfcc-svm")]
    # The graph-only attacker search skips the numpy members instead of failing on them.
    assert [s.name for s in find_attackers("emodb")] == ["emodb-attacker-dev-wav1d-s0"]
    with pytest.raises(ValueError):
        P.load_panel("emodb", "test")


def test_lowpass_augmentation_removes_high_band():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    out = D.lowpass(audio, 3000.0)
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(32000, 1 / 16000)
    assert spectrum[freqs > 3600].max() < 1e-6
    clean = np.abs(np.fft.rfft(audio))
    np.testing.assert_allclose(spectrum[freqs < 2900], clean[freqs < 2900], rtol=1e-4, atol=1e-4)
    batch = D.augment(np.stack([audio] * 8), rng, **D.PANEL_AUGMENT)
    assert batch.shape == (8, 32000) and np.isfinite(batch).all()


def _band_levels_db(audio, edges=(150, 400, 1000, 2500, 6000)):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    return np.array([10 * np.log10(spectrum[np.abs(freqs - f) < 0.1 * f].mean()) for f in edges])


def test_channel_augmentation_equalises_within_its_bounds():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    clean = _band_levels_db(audio)
    changes = []
    for seed in range(6):
        eq = D.random_equaliser(audio, np.random.default_rng(seed), 6.0, 3.0, True, False)
        changes.append(_band_levels_db(eq) - clean)
    changes = np.array(changes)
    # a static equaliser: each band within +-6 dB, and not the identity
    assert np.abs(changes).max() <= 6.5 and np.abs(changes).max() > 1.0
    field = D.random_equaliser(audio, np.random.default_rng(1), 6.0, 3.0, False, True)
    assert np.abs(_band_levels_db(field) - clean).max() <= 3.5
    batch = np.stack([audio] * 4)
    panel = D.augment(batch, np.random.default_rng(3), **D.PANEL_AUGMENT)
    channel = D.augment(batch, np.random.default_rng(3), **D.CHANNEL_AUGMENT)
    assert channel.shape == batch.shape and np.isfinite(channel).all()
    assert not np.array_equal(channel, panel)


def _tiny_corpus(root, pitch_by_speaker=False):
    import soundfile as sf

    wav = root / "emodb" / "wav"
    wav.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for s, speaker in enumerate(("03", "08", "10", "11", "15")):
        voice = 1.0 + 0.1 * s if pitch_by_speaker else 1.0
        for k, letter in enumerate("WLEAFTN"):
            n = 8000 + 1000 * k
            t = np.arange(n) / 16000
            tone = np.sin(2 * np.pi * (120 + 60 * k) * voice * t)
            audio = 0.3 * tone + 0.02 * rng.standard_normal(n)
            sf.write(wav / f"{speaker}a01{letter}a.wav", audio.astype(np.float32), 16000)


@pytest.mark.slow
@pytest.mark.parametrize("arch", models.PANEL_ARCHS)
def test_panel_family_training_smoke(tmp_path, arch):
    from plainsight_export import train

    _tiny_corpus(tmp_path)
    out = tmp_path / "run"
    argv = ["--corpus", "emodb", "--data", str(tmp_path), "--arch", arch, "--epochs", "2"]
    argv += ["--batch-size", "8", "--out", str(out), "--no-progress", "--role", "attacker"]
    argv += ["--panel", "dev", "--name", f"attacker-dev-{arch}-s0", "--shared-labels"]
    assert train.main(argv) == 0
    report = json.loads((out / f"attacker-dev-{arch}-s0.report.json").read_text())
    assert report["augment"] == "panel" and report["family"] == arch
    assert report["classes"] == P.shared_classes("emodb")  # boredom left out
    assert report["n_clips"] == {"train": 12, "val": 6, "test": 12}
    model = models.load_checkpoint(out / f"attacker-dev-{arch}-s0.pt")
    assert model.checkpoint["panel"] == "dev"
    with torch.no_grad():
        assert model(torch.zeros(1, 32000)).shape == (1, 6)


def test_panel_module_is_torch_free():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import plainsight.evaluate.panel as P\n"
        "print(len(P.mfcc_functionals(__import__('numpy').zeros(32000, 'float32'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "160"


def test_panel_table_lists_every_member_report(tmp_path):
    """The README table comes from the reports: one row each, adaptive with its masked UAR."""
    from plainsight_export.panel_table import table

    base = {"arch": "compact", "epochs": 3, "train_time_s": 1.0, "uar": 0.5, "chance_uar": 0.125}
    reports = {
        "attacker-dev-cnn2-s0": base | {"panel": "dev", "family": "cnn2"},
        "attacker-mfcc": base,
        "adaptive-compact-s2": base
        | {"role": "adaptive", "uar": 0.4, "test_clean": {"uar": 0.6, "chance_uar": 0.125}},
        "compact": base,  # the default model is not a panel member
    }
    (tmp_path / "ravdess").mkdir()
    for name, report in reports.items():
        (tmp_path / "ravdess" / f"{name}.report.json").write_text(
            json.dumps(report | {"name": name})
        )
    rows = table(tmp_path).splitlines()[2:]
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["dev", "attacker-dev-cnn2-s0"],
        ["dev (pre-panel)", "attacker-mfcc"],
        ["adaptive", "adaptive-compact-s2"],
    ]
    assert "60.0 (chance 12.5); on masked test audio 40.0" in rows[2]


def test_adaptive_training_masks_with_the_evaluation_masker(tmp_path):
    """--masked-cache: every split is masked by evaluate's default masker for the corpus (the
    cached clip equals what the evaluation masks), the test speakers stay out of training, and
    the checkpoint records the masker so evaluate can pair them."""
    from plainsight.evaluate.panel import same_masker
    from plainsight.masker import Masker
    from plainsight_export import train

    _tiny_corpus(tmp_path)
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--corpus", "emodb", "--data", str(tmp_path), "--arch", "compact", "--epochs", "1"]
    argv += ["--batch-size", "8", "--out", str(out), "--no-progress", "--role", "adaptive"]
    argv += ["--name", "adaptive-compact-s2", "--masked-cache", str(cache)]
    assert train.main(argv) == 0
    report = json.loads((out / "adaptive-compact-s2.report.json").read_text())
    assert "03" not in report["split"]["train"] and "08" not in report["split"]["train"]
    masker = Masker(model="emodb", backend="onnx", threads=1)
    assert same_masker(report["masker"], masker.settings())
    ckpt = models.load_checkpoint(out / "adaptive-compact-s2.pt").checkpoint
    assert ckpt["role"] == "adaptive" and same_masker(ckpt["trained_on_masker"], masker.settings())
    (folder,) = cache.iterdir()
    assert len(list(folder.glob("*.npy"))) == 35  # train, val and test clips
    clip = sorted((tmp_path / "emodb" / "wav").glob("03*.wav"))[0]
    from plainsight.corpora import load_audio

    audio = load_audio(clip, 16000)
    np.testing.assert_array_equal(
        np.load(folder / f"emodb-{clip.stem}.npy"), masker.mask(audio, 16000)
    )


def test_adaptive_training_with_speaker_references(tmp_path):
    """--masked-reference speaker: each speaker's clips are neutralised toward that speaker's
    medians over all of their clips (one cache folder per speaker), the cached clip equals the
    masker with that reference, and the member never pairs with the clip-reference masker."""
    from plainsight.corpora import load_audio
    from plainsight.evaluate.panel import same_masker
    from plainsight.masker import Masker
    from plainsight_export import data as D
    from plainsight_export import train

    _tiny_corpus(tmp_path, pitch_by_speaker=True)
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--corpus", "emodb", "--data", str(tmp_path), "--arch", "compact", "--epochs", "1"]
    argv += ["--batch-size", "8", "--out", str(out), "--no-progress", "--role", "adaptive"]
    argv += ["--name", "adaptive-spk", "--masked-cache", str(cache)]
    argv += ["--masked-privacy", "neutralize", "--masked-reference", "speaker"]
    assert train.main(argv) == 0
    clips = sorted((tmp_path / "emodb" / "wav").glob("*.wav"))
    speakers = {c.name[:2] for c in clips}
    assert len(list(cache.iterdir())) == len(speakers)  # one masker (and folder) per speaker
    own = [c for c in clips if c.name.startswith("03")]
    utts = [u for u in D.list_corpus(tmp_path, "emodb") if u.speaker == "03"]
    refs = train.speaker_references(D.load_clips(utts, D.CLASSES["emodb"]))
    masker = Masker(model="emodb", backend="onnx", threads=1, privacy="neutralize")
    with_ref = Masker(
        model="emodb",
        backend="onnx",
        threads=1,
        privacy="neutralize",
        neutralize_reference=refs["03"],
    )
    audio = load_audio(own[0], 16000)
    cached = next(cache.glob(f"*/emodb-{own[0].stem}.npy"))
    np.testing.assert_array_equal(np.load(cached), with_ref.mask(audio, 16000))
    assert not np.array_equal(np.load(cached), masker.mask(audio, 16000))
    ckpt = models.load_checkpoint(out / "adaptive-spk.pt").checkpoint
    assert not same_masker(ckpt["trained_on_masker"], masker.settings())


def test_adaptive_masker_takes_the_evaluations_objective():
    """--masked-target: the adaptive member trains on the masker `plainsight evaluate
    --mask-target T` runs, and pairs with that masker only."""
    from plainsight.evaluate.panel import same_masker
    from plainsight.masker import Masker
    from plainsight_export import train

    trained = train.adaptive_masker("emodb", gain_db=3.0, objective="untargeted").settings()
    common = dict(model="emodb", backend="onnx", threads=1, gain_db=3.0)
    evaluated = Masker(**common, objective="untargeted")
    default = Masker(**common)
    assert same_masker(trained, evaluated.settings())
    assert not same_masker(trained, default.settings())
    assert same_masker(train.adaptive_masker("emodb", gain_db=3.0).settings(), default.settings())


def _tiny_ravdess(root):
    import soundfile as sf

    rng = np.random.default_rng(1)
    for actor in ("01", "02", "17", "19"):
        folder = root / "ravdess" / f"Actor_{actor}"
        folder.mkdir(parents=True)
        for k in range(1, 9):  # every RAVDESS emotion code; calm (02) and surprised (08) unshared
            t = np.arange(9000) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (100 + 50 * k) * t) + 0.02 * rng.standard_normal(9000)
            name = f"03-01-{k:02d}-01-01-01-{actor}.wav"
            sf.write(folder / name, audio.astype(np.float32), 16000)


@pytest.mark.slow
def test_also_corpus_trains_on_both_corpora_training_speakers_only(tmp_path):
    """--also-corpus adds the other corpus's training speakers (shared labels, mapped to this
    corpus's names); validation and test stay this corpus's speakers."""
    from plainsight_export import train

    _tiny_corpus(tmp_path)
    _tiny_ravdess(tmp_path)
    out = tmp_path / "run"
    argv = ["--corpus", "emodb", "--data", str(tmp_path), "--arch", "compact", "--epochs", "1"]
    argv += ["--batch-size", "8", "--out", str(out), "--no-progress", "--role", "reference"]
    argv += ["--name", "surrogate-both", "--also-corpus", "ravdess"]
    assert train.main(argv) == 0
    report = json.loads((out / "surrogate-both.report.json").read_text())
    assert report["classes"] == P.shared_classes("emodb")
    assert report["also_trained_on"] == "ravdess"
    # EmoDB: 2 training speakers x 6 shared labels; RAVDESS: actors 01 and 02 x 6 shared labels
    assert report["n_clips"] == {"train": 12 + 12, "val": 6, "test": 12}
    assert report["split"]["train"] == ["emodb:10", "emodb:11", "ravdess:01", "ravdess:02"]
    assert report["split"]["test"] == ["03", "08"] and report["split"]["val"] == ["15"]
    with pytest.raises(SystemExit):
        train.parse_args(argv[:-2] + ["--also-corpus", "emodb"])


def test_explicit_attackers_take_statistics_members_too(tmp_path):
    """`plainsight evaluate --attackers a,b` scores numpy statistics members beside ONNX ones
    (it refused them: 'missing keys ['features']'), each with its panel role."""
    from plainsight.evaluate.run import EvalConfig, build_scorers
    from plainsight.masker import Masker

    _, onnx_dir = _onnx_member(tmp_path, "wav1d", ["anger", "neutral"], panel="dev", family="wav1d")
    stats_dir = _stats_member(tmp_path)[0]
    masker = Masker(model="emodb")
    cfg = EvalConfig(corpus="emodb", data="", masker={}, attackers=f"{onnx_dir},{stats_dir}")
    whitebox, transfer = build_scorers(masker, "emodb", cfg, "onnx", 1)
    assert [s.name for s in whitebox] == ["emodb-compact"]
    assert [(s.name, s.role) for s in transfer] == [
        ("emodb-attacker-dev-wav1d-s0", P.describe(onnx_dir)),
        ("emodb-attacker-final-mfcc-svm-s0", "final panel, mfcc-svm"),
    ]
