"""The gain stage (plainsight.gainfield, `Masker(gain_db=...)`): an exact identity at 0 dB,
an exact gradient, gains within the bound, a push toward the objective, and the file-only
contract (the stream refuses it, failing closed)."""

from __future__ import annotations

import numpy as np
import pytest
from plainsight.gainfield import GainField
from test_runtime_toymodel import TOY_WINDOW
from test_shaping import _voiced

RATE = 16000


@pytest.mark.parametrize("n", [700, 4280, 32000, 40001])
def test_zero_gain_is_the_identity_and_the_gradient_is_exact(n):
    rng = np.random.default_rng(n)
    signal = _voiced(n)
    field = GainField(signal, RATE)
    assert field.shape == (16, int(np.ceil(n / RATE / 0.1)) + 1)
    np.testing.assert_allclose(field(np.zeros(field.shape)), signal, atol=1e-6)
    g = rng.uniform(-3, 3, field.shape)
    weights = rng.standard_normal(n)

    def loss(grid):
        return float(np.dot(weights, field(grid).astype(np.float64)))

    analytic = field.gradient(g, weights)
    for _ in range(6):
        band, cell = rng.integers(field.shape[0]), rng.integers(field.shape[1])
        step = np.zeros(field.shape)
        step[band, cell] = 1e-2
        numeric = (loss(g + step) - loss(g - step)) / 2e-2
        assert abs(numeric - analytic[band, cell]) <= 2e-3 * max(1.0, abs(numeric))


def test_gains_stay_within_the_grid_bound_and_vary_smoothly():
    field = GainField(_voiced(32000), RATE)
    g = np.random.default_rng(1).choice([-4.0, 4.0], field.shape)
    db = 20 * np.log10(field.gains(g))
    assert db.max() <= 4.0 + 1e-4 and db.min() >= -4.0 - 1e-4
    # between two grid cells (100 ms = 12.5 frames) a frame's gain moves by a fraction
    assert np.abs(np.diff(db, axis=0)).max() <= 8.0 / 12.5 * 1.01 + 1e-4


def test_rebalance_moves_the_bundled_model_toward_neutral():
    from plainsight.masker import Masker, softmax

    masker = Masker(model="emodb", gain_db=4.0)
    x = _voiced(RATE * 2)
    starts = np.zeros(1, int)
    gained = masker.rebalance(x, starts, x[None])
    member = masker.members[0]
    neutral = member.spec.classes.index("neutral")

    def p_neutral(y):
        return float(softmax(masker._logits(member, y[None].astype(np.float32)))[0, neutral])

    # a random gain field of the same bound is the control
    field = GainField(x, RATE)
    random = field(np.random.default_rng(2).choice([-4.0, 4.0], field.shape))
    assert p_neutral(gained) > max(p_neutral(x), p_neutral(random)) + 0.05
    level = 10 * np.log10(np.mean(gained.astype(np.float64) ** 2) / np.mean(x**2))
    assert abs(level) < 4.0  # a re-balance, not a volume change beyond the bound


def test_masker_gain_db_off_by_default_and_checked(toy):
    from plainsight.masker import Masker

    x = _voiced(TOY_WINDOW * 3 + 77)
    plain = Masker(model=toy, backend="onnx", steps=3, snr_db=30.0)
    assert plain.gain_db == 0.0 and "gain_db" not in plain.settings()
    gained = Masker(model=toy, backend="onnx", steps=3, snr_db=30.0, gain_db=3.0)
    assert gained.settings()["gain_db"] == 3.0
    out = gained.mask(x, RATE)
    assert out.shape == x.shape and np.isfinite(out).all()
    # the gain stage re-balances far beyond the mask's 30 dB budget
    snr = 10 * np.log10(np.mean(x**2) / np.mean((out - x) ** 2))
    assert snr < 25.0 < 10 * np.log10(np.mean(x**2) / np.mean((plain.mask(x, RATE) - x) ** 2))
    short = _voiced(TOY_WINDOW // 2)  # one centred, zero-padded window
    assert gained.mask(short, RATE).shape == short.shape
    for bad in (-1.0, 12.5, float("nan")):
        with pytest.raises(ValueError, match="gain_db"):
            Masker(model=toy, backend="onnx", gain_db=bad)


def test_stream_refuses_the_gain_stage(toy):
    import subprocess
    import sys

    from plainsight.masker import Masker
    from plainsight.stream import StreamProcessor

    with pytest.raises(ValueError, match="files only"):
        StreamProcessor(Masker(model=toy, backend="onnx", gain_db=3.0), RATE)
    pcm = np.round(_voiced(RATE) * 32767).astype("<i2").tobytes()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "plainsight.cli",
            "stream",
            "--model",
            str(toy),
            "--mask-gain-db",
            "3",
        ],
        input=pcm,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stdout == b""  # fails closed: nothing sent
    assert b"files only" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
