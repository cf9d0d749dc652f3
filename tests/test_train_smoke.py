"""Models, checkpoints and a training run on a tiny synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plainsight.features import FeatureConfig  # noqa: E402
from plainsight_export import models  # noqa: E402


@pytest.mark.parametrize("arch", models.ARCHS)
def test_models_map_waveform_to_logits(arch):
    torch.manual_seed(0)
    model = models.build_model(arch, 7, models.default_features(arch)).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 32000) * 0.1)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    if hasattr(model, "body"):
        models.check_body(model.body)


def test_sizes_match_the_brief():
    cfg = FeatureConfig()
    seed = models.build_model("seed-cnn", 7, cfg)
    compact = models.build_model("compact", 7, cfg)
    assert 4.5e6 < models.count_params(seed) < 4.7e6
    assert models.count_params(compact) <= models.count_params(seed) / 10
    assert models.count_macs(compact)["body"] < models.count_macs(seed)["body"]


def test_compact_serves_other_window_lengths():
    model = models.build_model("compact", 8, FeatureConfig()).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 16000 * 3)).shape == (2, 8)


def test_check_body_rejects_foreign_ops():
    with pytest.raises(TypeError):
        models.check_body(torch.nn.Sequential(torch.nn.Tanh()))
    with pytest.raises(TypeError):
        models.check_body(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, dilation=2)))


@pytest.mark.parametrize("arch", ["compact", "mfcc-linear", "spectral-linear"])
def test_checkpoint_round_trip(tmp_path, arch):
    cfg = models.default_features(arch).with_stats(
        np.full(40 if arch == "compact" else 64, -5.0),
        np.full(40 if arch == "compact" else 64, 3.0),
    )
    model = models.build_model(arch, 7, cfg)
    model.frontend.set_stats(cfg.mean, cfg.std)
    path = models.save_checkpoint(
        tmp_path / "m.pt",
        model,
        arch=arch,
        arch_kwargs={},
        classes=list("abcdefg"),
        features=cfg,
        window_samples=32000,
        seed=0,
        corpus="emodb",
        role="default",
        metrics={"uar": 0.5},
    )
    loaded = models.load_checkpoint(path)
    assert not loaded.training
    x = torch.randn(2, 32000) * 0.1
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x), atol=1e-6)
    assert loaded.checkpoint["classes"] == list("abcdefg")
    assert list(tmp_path.iterdir()) == [path]


def test_load_checkpoint_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        models.load_checkpoint(bad)


def _tiny_emodb(root):
    import soundfile as sf

    wav = root / "emodb" / "wav"
    wav.mkdir(parents=True)
    rng = np.random.default_rng(0)
    letters = "WLEAFTN"
    for speaker in ("03", "08", "10", "11", "15"):
        for k, letter in enumerate(letters):
            n = 8000 + 1000 * k
            t = np.arange(n) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (120 + 60 * k) * t) + 0.02 * rng.standard_normal(n)
            sf.write(wav / f"{speaker}a01{letter}a.wav", audio.astype(np.float32), 16000)


def _train(tmp_path, out, arch="compact", extra=()):
    from plainsight_export import train

    argv = [
        "--corpus",
        "emodb",
        "--data",
        str(tmp_path),
        "--arch",
        arch,
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    assert train.main(argv) == 0
    return out / f"{arch}.pt"


@pytest.mark.slow
def test_training_smoke_and_determinism(tmp_path):
    import json

    _tiny_emodb(tmp_path)
    first = _train(tmp_path, tmp_path / "run1")
    second = _train(tmp_path, tmp_path / "run2")
    report = json.loads((tmp_path / "run1" / "compact.report.json").read_text())
    assert (tmp_path / "run1" / "compact.report.png").stat().st_size > 1000
    assert report["n_clips"] == {"train": 14, "val": 7, "test": 14}
    assert report["chance_uar"] == pytest.approx(1 / 7)
    assert np.asarray(report["test"]["confusion"]).sum() == 14
    assert 0.0 <= report["uar"] <= 1.0 and report["params"] > 0
    model = models.load_checkpoint(first)
    assert model.checkpoint["corpus"] == "emodb" and model.checkpoint["window_samples"] == 32000
    assert len(model.checkpoint["features"]["mean"]) == 40
    a = torch.load(first, weights_only=True)["state_dict"]
    b = torch.load(second, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_training_sharpness_aware(tmp_path):
    import json

    _tiny_emodb(tmp_path)
    plain = _train(tmp_path, tmp_path / "plain")
    flat = _train(tmp_path, tmp_path / "sam", extra=("--sam-rho", "0.1"))
    report = json.loads((tmp_path / "sam" / "compact.report.json").read_text())
    assert report["sam_rho"] == 0.1
    a = torch.load(plain, weights_only=True)["state_dict"]
    b = torch.load(flat, weights_only=True)["state_dict"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.slow
def test_training_mfcc_attacker(tmp_path):
    _tiny_emodb(tmp_path)
    path = _train(tmp_path, tmp_path / "run", arch="mfcc-linear")
    model = models.load_checkpoint(path)
    with torch.no_grad():
        assert model(torch.zeros(1, 32000)).shape == (1, 7)


def test_train_cli_errors(tmp_path, capsys):
    from plainsight_export import train

    assert train.main(["--corpus", "emodb", "--data", str(tmp_path)]) == 2
    assert "corpus folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_training_leave_one_speaker_out(tmp_path):
    import json

    from plainsight_export import train

    _tiny_emodb(tmp_path)
    argv = [
        "--corpus",
        "emodb",
        "--data",
        str(tmp_path),
        "--arch",
        "mfcc-linear",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--loso",
        "--out",
        str(tmp_path / "cv"),
        "--no-progress",
    ]
    assert train.main(argv) == 0
    report = json.loads((tmp_path / "cv" / "mfcc-linear.loso.report.json").read_text())
    assert [f["speaker"] for f in report["folds"]] == ["03", "08", "10", "11", "15"]
    assert sum(f["n"] for f in report["folds"]) == 35
    assert np.asarray(report["pooled"]["confusion"]).sum() == 35


def test_sharpness_aware_gradient_is_taken_at_the_moved_weights():
    from plainsight_export.train import sharpness_aware_gradient

    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randn(16)
    w = torch.randn(5, requires_grad=True)
    before = w.detach().clone()

    def loss_of():
        return ((torch.tanh(x @ w) - y) ** 2).mean()

    loss_of().backward()
    g = w.grad.detach().clone()
    rho = 0.3
    sharpness_aware_gradient([w], loss_of, rho)
    assert torch.equal(w.detach(), before)  # the weights come back exactly
    moved = (before + rho * g / g.norm()).requires_grad_(True)
    ((torch.tanh(x @ moved) - y) ** 2).mean().backward()
    torch.testing.assert_close(w.grad, moved.grad)
    assert not torch.allclose(w.grad, g, rtol=1e-3, atol=1e-6)  # the move mattered


def test_spectral_statistics_read_loudness_and_spectral_balance():
    """The eGeMAPS-like surrogate's descriptors mean what their names say: a 300 Hz tone
    has a higher alpha ratio and Hammarberg index than a 3 kHz one and all its energy in the
    0-500 Hz share; twice the amplitude is ln 4 more log energy; gradients are finite."""
    model = models.build_model("spectral-linear", 7, models.default_features("spectral-linear"))
    t = torch.arange(32000) / 16000
    low, high = 0.1 * torch.sin(2 * np.pi * 300 * t), 0.1 * torch.sin(2 * np.pi * 3000 * t)
    x = torch.stack([low, high, 2 * low]).requires_grad_(True)
    lld = model.descriptors(model.frontend.forward_fft(x)).mean(1)  # [3, 15]
    energy, alpha, hammarberg = lld[:, 0], lld[:, 1], lld[:, 2]
    assert alpha[0] > alpha[1] + 5 and hammarberg[0] > hammarberg[1] + 5
    assert abs(float(energy[2] - energy[0]) - np.log(4)) < 0.05
    shares = lld[:, 10:15]  # log share of 0-0.5, 0.5-1, 1-2, 2-4, 4-8 kHz
    assert float(shares[0, 0]) > -0.1 and float(shares[1, 3]) > -0.1
    stats = model.statistics(x, fast=True)
    assert stats.shape == (3, 90) and torch.isfinite(stats).all()
    model(x, fast=True).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
