"""Whisper base's encoder in torch (build side) equals CTranslate2's on the pinned weights,
and the pooled head is the whisper members' classifier, differentiable."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch port is build-side")

from plainsight.evaluate import panel as P  # noqa: E402
from plainsight.evaluate import whisper_weights as ww  # noqa: E402
from test_whisper_encoder import speechy_window  # noqa: E402

pytestmark = pytest.mark.skipif(
    not ww.weights_installed(), reason=f"Whisper weight packages not installed: {ww.INSTALL_HINT}"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return ww.ensure_model_dir(tmp_path_factory.mktemp("wb"))


def test_torch_encoder_equals_ctranslate2(model_dir):
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor
    from plainsight_export.whisper_torch import LogMel, WhisperEncoder

    x = speechy_window()
    mel = FeatureExtractor(feature_size=80)(x, padding=0)
    torch_mel = LogMel()(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(torch_mel, mel, atol=1e-4)
    reference = ctranslate2.models.Whisper(str(model_dir), compute_type="float32", intra_threads=1)
    expected = np.asarray(reference.encode(P.ctranslate2_view(mel[None]), to_cpu=True))[0]
    with torch.no_grad():
        got = WhisperEncoder(model_dir / "model.bin")(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == expected.shape == (100, 512)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_pooled_head_is_the_members_linear_classifier_and_has_a_gradient(model_dir):
    from plainsight_export.whisper_torch import PooledHead, WhisperEncoder

    rng = np.random.default_rng(0)
    mean, scale = rng.normal(size=1024), rng.uniform(0.5, 2, 1024)
    coef, intercept = rng.normal(size=(3, 1024)), rng.normal(size=3)
    head = PooledHead(WhisperEncoder(model_dir / "model.bin"), mean, scale, coef, intercept)
    x = torch.from_numpy(speechy_window())[None].requires_grad_(True)
    logits = head(x)
    hidden = head.encoder(x)[0].detach().numpy()
    pooled = np.concatenate([hidden.mean(0), hidden.std(0)])
    expected = P.linear_scores(
        ((pooled - mean) / scale)[None], {"coef": coef, "intercept": intercept}
    )
    np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=1e-4, atol=1e-3)
    (grad,) = torch.autograd.grad(logits[0, 1], x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().max() > 0


def test_feature_disruption_reads_the_encoder_at_the_asked_depth(model_dir):
    from plainsight_export import transfer_study as T
    from plainsight_export.whisper_torch import PooledHead, WhisperEncoder

    encoder = WhisperEncoder(model_dir / "model.bin")
    head = PooledHead(encoder, np.zeros(1024), np.ones(1024), np.zeros((2, 1024)), np.zeros(2))
    x = torch.from_numpy(speechy_window())[None]
    with torch.no_grad():
        full = encoder(x)
        assert torch.allclose(encoder.norm(encoder(x, depth=6)), full, atol=1e-6)
        assert not torch.allclose(encoder(x, depth=0), encoder(x, depth=2))
        s = T.Surrogate("w", head, 0)
        assert T.feature_disruption(s, x, x, 2).abs().item() < 1e-12
        pushed = x + 0.01 * torch.randn_like(x)
        assert T.feature_disruption(s, pushed, x, 0).item() < 0


def test_pooled_head_on_a_middle_layer_pools_that_layer(model_dir):
    from plainsight.evaluate.panel import FEATURES
    from plainsight_export.whisper_torch import PooledHead, WhisperEncoder, layer_kind

    rng = np.random.default_rng(1)
    encoder = WhisperEncoder(model_dir / "model.bin")
    coef, intercept = rng.normal(size=(3, 1024)), rng.normal(size=3)
    head = PooledHead(encoder, np.zeros(1024), np.ones(1024), coef, intercept, depth=3)
    x = speechy_window()
    with torch.no_grad():
        logits = head(torch.from_numpy(x)[None])[0].numpy()
    pooled = FEATURES[layer_kind(3)](x)  # the panel's torch-free features of that layer
    np.testing.assert_allclose(logits, pooled @ coef.T + intercept, rtol=1e-4, atol=1e-3)
    assert not np.allclose(pooled, FEATURES[layer_kind(6)](x), rtol=1e-2)
