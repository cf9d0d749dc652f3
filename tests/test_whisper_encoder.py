"""The evaluation's numpy Whisper encoder (middle-layer panel members) equals CTranslate2's
encoder at full depth and the build side's torch port at every depth, on the pinned weights."""

import math

import numpy as np
import pytest
from plainsight.evaluate import panel as P
from plainsight.evaluate import whisper_weights as ww
from plainsight.evaluate.whisper_encoder import WhisperEncoderNumpy, conv1d, gelu

needs_weights = pytest.mark.skipif(
    not ww.weights_installed(), reason=f"Whisper weight packages not installed: {ww.INSTALL_HINT}"
)


def speechy_window(n=32000):
    """2 s of a pitched, amplitude-modulated tone pair with a little noise."""
    t = np.arange(n) / 16000
    rng = np.random.default_rng(5)
    voiced = np.sin(2 * np.pi * 170 * t) + 0.3 * np.sin(2 * np.pi * 2300 * t)
    return (0.1 * voiced * (1 + np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(n)).astype(
        np.float32
    )


def _mel(x):
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=80)(x, padding=0)


def test_gelu_is_the_erf_gelu():
    x = np.linspace(-6, 6, 2001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(gelu(x) - exact).max() < 1e-6


def test_conv1d_is_a_padded_strided_correlation():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(4, 9)), rng.normal(size=(5, 4, 3)), rng.normal(size=5)
    padded = np.pad(x, ((0, 0), (1, 1)))
    for stride in (1, 2):
        starts = range(0, 9, stride)
        expected = np.array(
            [[(w[o] * padded[:, s : s + 3]).sum() + b[o] for s in starts] for o in range(5)]
        )
        np.testing.assert_allclose(conv1d(x, w, b, stride), expected, atol=1e-12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if not ww.weights_installed():
        pytest.skip(f"Whisper weight packages not installed: {ww.INSTALL_HINT}")
    return ww.ensure_model_dir(tmp_path_factory.mktemp("wb"))


@needs_weights
def test_full_depth_equals_ctranslate2(model_dir):
    import ctranslate2

    mel = _mel(speechy_window())
    reference = ctranslate2.models.Whisper(str(model_dir), compute_type="float32", intra_threads=1)
    expected = np.asarray(reference.encode(P.ctranslate2_view(mel[None]), to_cpu=True))[0]
    got = WhisperEncoderNumpy(model_dir / "model.bin")(mel)
    assert got.shape == expected.shape == (100, 512)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


@needs_weights
def test_every_depth_equals_the_torch_port(model_dir):
    torch = pytest.importorskip("torch", reason="the torch port is build-side")
    from plainsight_export.whisper_torch import WhisperEncoder

    x = speechy_window()
    port = WhisperEncoder(model_dir / "model.bin")
    mel = _mel(x)
    for depth in (0, 1, 3, 6):
        with torch.no_grad():
            expected = port(torch.from_numpy(x)[None], depth=depth)[0].numpy()
        got = WhisperEncoderNumpy(model_dir / "model.bin", depth)(mel)
        assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4, depth
    with pytest.raises(ValueError, match="7"):
        WhisperEncoderNumpy(model_dir / "model.bin", 7)


@needs_weights
def test_layer_feature_kind_pools_that_block(model_dir, monkeypatch):
    monkeypatch.setenv(ww.ENV_DIR, str(model_dir))
    x = speechy_window()
    hidden = WhisperEncoderNumpy(model_dir / "model.bin", 3)(_mel(x))
    feats = P.FEATURES["whisper-base-l3"](x)
    assert feats.shape == (1024,)
    np.testing.assert_allclose(feats, np.concatenate([hidden.mean(0), hidden.std(0)]), rtol=1e-5)
    assert not np.allclose(feats, P.FEATURES["whisper-base-l2"](x))
