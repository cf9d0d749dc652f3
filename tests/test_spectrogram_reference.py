"""The spectrogram-domain FGSM reference: budget holds and the attack moves the loss."""

import pytest

torch = pytest.importorskip("torch", reason="the spectrogram reference is build-side (torch)")

from plainsight_export.spectrogram_reference import attack_features  # noqa: E402


def _body():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20 * 8, 4)).eval()


@pytest.mark.parametrize("steps", [1, 10])
def test_attack_respects_budget_and_changes_loss(steps):
    body = _body()
    feats = torch.randn(6, 1, 20, 8)
    own = body(feats).argmax(1)
    ce = torch.nn.functional.cross_entropy
    eps = 0.3
    away = attack_features(body, feats, own, eps, steps, targeted=False)
    assert (away - feats).abs().max() <= eps + 1e-6
    assert ce(body(away), own) > ce(body(feats), own)
    goal = torch.zeros_like(own)
    toward = attack_features(body, feats, goal, eps, steps, targeted=True)
    assert (toward - feats).abs().max() <= eps + 1e-6
    assert ce(body(toward), goal) < ce(body(feats), goal)


def test_zero_budget_is_identity():
    body = _body()
    feats = torch.randn(2, 1, 20, 8)
    assert torch.equal(attack_features(body, feats, body(feats).argmax(1), 0.0, 10, False), feats)
