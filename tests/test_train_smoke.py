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


@pytest.mark.parametrize("arch", ["compact", "mfcc-linear"])
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
