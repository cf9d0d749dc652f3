"""Transfer study (issue 9 section 2): transforms keep shapes, the attack keeps the runtime's
budget and window layout, SNR equalisation is exact, transform gradients match numerics."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the transfer study is build-side (torch)")

from plainsight.masker import window_starts  # noqa: E402
from plainsight_export import transfer_study as T  # noqa: E402


def _speechy(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    tone = np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 2300 * t)
    return (0.1 * envelope * tone + 0.005 * rng.standard_normal(n)).astype(np.float32)


class _Toy(torch.nn.Module):
    """A tiny differentiable 'emotion model': band energies of 2 s windows -> 3 logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16, 3)

    def forward(self, x):
        frames = x.reshape(len(x), 16, -1)
        return self.linear(torch.log(frames.pow(2).mean(dim=2) + 1e-6))


def _attack_loss(surrogate, x):
    """The surrogate's loss toward its target over the windows Masker.mask lays on x."""
    _, _, starts, _ = T.plan(x, 35.0)
    index = starts[:, None] + np.arange(T.WINDOW)[None, :]
    with torch.no_grad():
        return float(T.objective(surrogate.logits(torch.from_numpy(x[index])), 1, "ce"))


def _surrogate():
    return T.Surrogate("toy", _Toy().eval(), target=1)


@pytest.mark.parametrize("n", [20000, 32000, 52000, 100000])
def test_every_transform_keeps_shape_and_window_grid(n):
    x = torch.from_numpy(_speechy(n))
    starts = window_starts(max(n, T.WINDOW), T.WINDOW, T.HOP)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y, st = T.transform(x, starts, T.ALL_DIVERSITY, rng)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert len(st) == len(starts)
        assert st.min() >= 0 and st.max() <= max(n, T.WINDOW) - T.WINDOW


def test_no_diversity_is_the_identity():
    x = torch.from_numpy(_speechy(40000))
    starts = window_starts(40000, T.WINDOW, T.HOP)
    y, st = T.transform(x, starts, (), np.random.default_rng(0))
    assert torch.equal(y, x) and np.array_equal(st, starts)


@pytest.mark.parametrize("n", [20000, 70000])
def test_plan_uses_the_runtime_budget_and_layout(n):
    audio = _speechy(n)
    signal, bound, starts, offset = T.plan(audio, 35.0)
    if n < T.WINDOW:
        assert offset == (T.WINDOW - n) // 2 and len(signal) == T.WINDOW
        assert np.all(bound[:offset] == 0) and np.all(bound[offset + n :] == 0)
    else:
        assert offset == 0 and len(bound) == n
        np.testing.assert_array_equal(starts, window_starts(n, T.WINDOW, T.HOP))
    # the first 2 s window's bound is RMS * 10^(-35/20), as Masker.budget computes it
    first = audio[: min(n, T.WINDOW)].astype(np.float64)
    expected = np.sqrt(np.mean(first**2)) * 10 ** (-35 / 20)
    assert bound[offset] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("diversity", [(), T.ALL_DIVERSITY])
def test_craft_respects_the_bound_and_moves_toward_the_target(diversity):
    audio = _speechy(50000)
    surrogate = _surrogate()
    method = T.Method("t", ["toy"], steps=10, diversity=diversity)
    delta = T.craft(audio, 35.0, [surrogate], method, np.random.default_rng(0))
    _, bound, starts, _ = T.plan(audio, 35.0)
    assert delta.shape == audio.shape
    assert np.all(np.abs(delta) <= bound + 1e-7)
    index = starts[:, None] + np.arange(T.WINDOW)[None, :]

    def loss(x):
        with torch.no_grad():
            logits = surrogate.logits(torch.from_numpy(x[index]))
        return float(T.objective(logits, 1, "ce"))

    assert loss(audio + delta) < loss(audio)


def test_at_snr_is_exact():
    audio = _speechy(40000)
    delta = np.random.default_rng(1).standard_normal(40000).astype(np.float32) * 1e-3
    out = T.at_snr(audio, delta, 38.0)
    noise = out.astype(np.float64) - audio
    snr = 10 * np.log10(np.sum(audio.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr == pytest.approx(38.0, abs=0.01)


def test_transform_chain_gradient_matches_numeric():
    """Directional derivative of loss(transform(x)) by autograd vs central differences,
    with the random draws fixed (same seed). Quantisation (straight-through) and noise (its
    level follows the clip's RMS through a stop-gradient) are left out on purpose."""
    kinds = ("shift", "gain", "resample", "lowpass")
    surrogate = _surrogate()
    x0 = torch.from_numpy(_speechy(48000)).double()
    surrogate.model.double()
    starts = window_starts(48000, T.WINDOW, T.HOP)
    direction = torch.from_numpy(np.random.default_rng(2).standard_normal(48000))

    def loss(x):
        y, st = T.transform(x, starts, kinds, np.random.default_rng(5))
        index = torch.from_numpy(st[:, None] + np.arange(T.WINDOW)[None, :])
        return T.objective(surrogate.logits(y[index]), 1, "ce")

    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(x), x)
    h = 1e-4
    with torch.no_grad():
        numeric = (loss(x0 + h * direction) - loss(x0 - h * direction)) / (2 * h)
    assert float((g * direction).sum()) == pytest.approx(float(numeric), rel=1e-4, abs=1e-8)


def test_stream_crafting_keeps_length_and_each_hop_budget():
    audio = _speechy(15000)  # 3.75 hops of 250 ms: the last one is short
    method = T.Method("t", ["toy"], steps=3)
    delta = T.craft_stream(audio, 35.0, [_surrogate()], method, np.random.default_rng(0))
    assert delta.shape == audio.shape
    assert np.abs(delta).max() > 0
    # each hop's bound comes from the window ending at it: at most RMS(seen) * 10^(-35/20)
    for first in range(0, 15000, 4000):
        seen = audio[: first + 4000].astype(np.float64)
        limit = np.sqrt(np.sum(seen**2) / len(seen)) * 10 ** (-35 / 20)
        assert np.abs(delta[first : first + 4000]).max() <= limit * (1 + 1e-5)


def test_spectral_shaper_follows_the_speech_spectrum():
    clean = torch.from_numpy(_speechy(32000))
    white = torch.from_numpy(np.random.default_rng(1).standard_normal(32000).astype(np.float32))
    identity = T.SpectralShaper(clean, 0.0)
    assert torch.equal(identity(white), white)
    shaper = T.SpectralShaper(clean, 1.0)
    a, b = white, torch.roll(white, 777)
    torch.testing.assert_close(shaper(a + b), shaper(a) + shaper(b), atol=1e-5, rtol=1e-4)

    def band_energy(x, lo, hi):
        spec = torch.fft.rfft(x).abs() ** 2
        freqs = torch.fft.rfftfreq(len(x), 1 / 16000)
        return float(spec[(freqs >= lo) & (freqs < hi)].sum())

    # the clean signal has its energy at 180 Hz and 2.3 kHz: the shaped noise too, white not
    for x, concentrated in ((white, False), (shaper(white), True)):
        share = (band_energy(x, 150, 210) + band_energy(x, 2250, 2350)) / band_energy(x, 0, 8000)
        assert (share > 0.5) == concentrated, share


def test_masking_shaper_is_the_runtimes_threshold():
    clean = torch.from_numpy(_speechy(32000))
    shaper = T.SpectralShaper(clean, 1.0, masking=True)
    power = shaper._stft(clean).abs().pow(2)
    from plainsight.shaping import masking_threshold

    expected = torch.from_numpy(masking_threshold(power.T.numpy())).T
    torch.testing.assert_close(T.masking_threshold(power), expected, rtol=1e-4, atol=1e-6)
    white = torch.from_numpy(np.random.default_rng(2).standard_normal(32000).astype(np.float32))
    assert torch.isfinite(shaper(white)).all() and shaper(white).abs().max() > 0


def test_shaped_craft_keeps_length_and_moves_toward_the_target():
    audio = _speechy(40000)
    method = T.Method("shaped", ["toy"], steps=5, shape=1.0)
    surrogate = _surrogate()
    delta = T.craft(audio, 30.0, [surrogate], method, np.random.default_rng(0))
    assert delta.shape == audio.shape and np.abs(delta).max() > 0
    starts = window_starts(len(audio), T.WINDOW, T.HOP)

    def target_logit(x):
        wins = torch.from_numpy(np.stack([x[s : s + T.WINDOW] for s in starts]))
        with torch.no_grad():
            return torch.log_softmax(surrogate.model(wins), 1)[:, 1].mean().item()

    assert target_logit(audio + delta) > target_logit(audio)


def test_shaped_noise_control_uses_no_gradient_and_fills_the_shaped_budget():
    audio = _speechy(40000)
    method = T.METHODS["masking-1-noise"]
    assert method.random and not method.surrogates  # loads no model at all
    noise = T.craft(audio, 30.0, [], method, np.random.default_rng(0))
    again = T.craft(audio, 30.0, [], method, np.random.default_rng(0))
    other = T.craft(audio, 30.0, [], method, np.random.default_rng(1))
    np.testing.assert_array_equal(noise, again)
    assert not np.allclose(noise, other)
    # Exactly the shaper applied to the full budget with random signs.
    signal, bound, _, _ = T.plan(audio, 30.0)
    shaper = T.SpectralShaper(torch.from_numpy(signal), 1.0, masking=True)
    signs = np.random.default_rng(0).choice([-1.0, 1.0], len(signal)).astype(np.float32)
    expected = shaper(torch.from_numpy(bound * signs)).numpy()
    np.testing.assert_allclose(noise, expected, rtol=1e-5, atol=1e-7)


class _SpectralToy(torch.nn.Module):
    """Log energies of 16 frequency bands of the window -> 3 logits: a model that a
    time-shifted perturbation can move (the time-segment toy cannot tell a shift apart)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.linear = torch.nn.Linear(16, 3)

    def forward(self, x):
        power = torch.fft.rfft(x).abs().pow(2)[:, 1:]
        bands = power[:, : power.shape[1] // 16 * 16].reshape(len(x), 16, -1).mean(dim=2)
        return self.linear(torch.log(bands + 1e-6))


def test_universal_perturbation_moves_unseen_clips_toward_the_target(monkeypatch):
    surrogate = T.Surrogate("spectral-toy", _SpectralToy().eval(), target=1)
    train = [_speechy(n, seed) for seed, n in enumerate((20000, 36000, 50000))]
    monkeypatch.setattr(T, "UNIVERSAL_STEPS", 0)
    untrained = T.train_universal(train, [surrogate], 5.0, seed=0)  # its random start
    monkeypatch.setattr(T, "UNIVERSAL_STEPS", 60)
    v = T.train_universal(train, [surrogate], 5.0, seed=0)
    assert v.shape == (T.WINDOW,) and np.isfinite(v).all()
    clip = _speechy(45000, seed=9)  # not a training clip
    delta = T.tile_universal(v, len(clip))
    assert delta.shape == clip.shape
    np.testing.assert_array_equal(delta[T.WINDOW :], v[: len(clip) - T.WINDOW])
    starts = window_starts(len(clip), T.WINDOW, T.HOP)

    def target_logprob(perturbation):
        x = T.at_snr(clip, T.tile_universal(perturbation, len(clip)), 5.0)
        wins = torch.from_numpy(np.stack([x[s : s + T.WINDOW] for s in starts]))
        with torch.no_grad():
            return torch.log_softmax(surrogate.model(wins), 1)[:, 1].mean().item()

    # at the same SNR, the trained perturbation moves an unseen clip further than its start
    assert target_logprob(v) > target_logprob(untrained) + 0.1


def test_feature_loss_disrupts_the_cnn_layer_more_than_noise():
    from plainsight.features import FeatureConfig
    from plainsight_export import models as M

    torch.manual_seed(0)
    model = M.build_model("compact", 3, FeatureConfig()).eval()
    surrogate = T.Surrogate("compact-toy", model, target=1)
    audio = _speechy(32000)
    method = T.Method("feature", ["compact-toy"], steps=5, loss="feature", layer=6)
    delta = T.craft(audio, 30.0, [surrogate], method, np.random.default_rng(0))
    noise = np.random.default_rng(1).standard_normal(len(audio)).astype(np.float32)

    def disruption(perturbation):
        x = torch.from_numpy(T.at_snr(audio, perturbation, 30.0))[None]
        clean = torch.from_numpy(audio)[None]
        with torch.no_grad():
            return -T.feature_disruption(surrogate, x, clean, 6).item()

    assert disruption(delta) > 2 * disruption(noise)


def test_stream_gain_crafting_is_causal_and_keeps_length():
    audio = _speechy(21000)
    method = T.Method("gain", ["toy"], steps=3, gain_db=3.0)
    surrogate = _surrogate()
    delta = T.craft_stream_gain(audio, [surrogate], method, np.random.default_rng(0))
    assert delta.shape == audio.shape and np.abs(delta).max() > 0
    # the first hops do not depend on what comes later (the past is sent)
    shorter = T.craft_stream_gain(audio[:12000], [surrogate], method, np.random.default_rng(0))
    np.testing.assert_allclose(delta[:8000], shorter[:8000], atol=1e-6)
    off = T.Method("off", [], gain_db=1e-9, random=True)
    quiet = T.craft_stream_gain(audio, [], off, np.random.default_rng(0))
    assert np.abs(quiet).max() < 1e-5  # no gain: the audio itself


def test_stream_gain_lookahead_sees_only_its_lookahead():
    audio = _speechy(21000)
    method = T.Method("gain-la", ["toy"], steps=3, gain_db=3.0, lookahead=4000)
    surrogate = _surrogate()
    delta = T.craft_stream_gain(audio, [surrogate], method, np.random.default_rng(0))
    assert delta.shape == audio.shape
    # hops 0 and 1 (to sample 8000) may use input to 12000, never beyond
    shorter = T.craft_stream_gain(audio[:12000], [surrogate], method, np.random.default_rng(0))
    np.testing.assert_allclose(delta[:8000], shorter[:8000], atol=1e-6)
    cut = T.craft_stream_gain(audio[:11000], [surrogate], method, np.random.default_rng(0))
    assert np.abs(delta[4000:8000] - cut[4000:8000]).max() > 1e-6  # it does look ahead
    plain = T.Method("gain", ["toy"], steps=3, gain_db=3.0)
    without = T.craft_stream_gain(audio, [surrogate], plain, np.random.default_rng(0))
    assert np.abs(delta - without).max() > 1e-6


def test_warp_field_is_the_identity_at_zero_and_a_delay_when_constant():
    def tones(t):
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
        return 0.1 * envelope * (np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 2300 * t))

    audio = tones(np.arange(20000) / 16000).astype(np.float32)
    field = T.WarpField(torch.from_numpy(audio), 0.1)
    same = field(torch.zeros(field.cells)).numpy()
    inner = slice(100, -100)  # the ends read clamped samples
    assert np.max(np.abs(same - audio)[inner]) < 1e-6
    # a constant displacement of 2.5 samples reads the clip 2.5 samples later
    late = field(torch.full((field.cells,), 2.5)).numpy()
    exact = tones((np.arange(20000) + 2.5) / 16000)
    error = (late - exact)[inner]
    assert np.sqrt(np.mean(error**2)) < 1e-3 * np.sqrt(np.mean(exact[inner] ** 2))


def _crafted_toward_the_target(method):
    """(audio, delta) of a field method on a speech-like clip, checked to lower the loss."""
    audio = _speechy(50000)
    surrogate = _surrogate()
    delta = T.craft(audio, 35.0, [surrogate], method, np.random.default_rng(0))
    assert delta.shape == audio.shape
    assert _attack_loss(surrogate, audio + delta) < _attack_loss(surrogate, audio)
    return audio, delta


def test_warp_craft_keeps_the_bound_and_moves_toward_the_target():
    audio, delta = _crafted_toward_the_target(T.Method("warp", ["toy"], steps=5, warp_ms=1.0))
    # a 1 ms warp of a signal whose fastest part is 2300 Hz moves no sample by more than
    # 2 pi 2300 * 1 ms of its amplitude
    assert np.abs(delta).max() < 2 * np.pi * 2300 * 1e-3 * np.abs(audio).max()


def test_formant_field_is_the_identity_at_zero_and_moves_the_envelope_not_the_pitch():
    rate, f0 = 16000, 150.0
    t = np.arange(24000) / rate
    # a vowel: harmonics of 150 Hz under one resonance at 1200 Hz
    harmonics = np.arange(1, 40)
    weights = 1.0 / (1.0 + ((harmonics * f0 - 1200.0) / 150.0) ** 2)
    audio = 0.05 * (weights[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t)).sum(0)
    audio = audio.astype(np.float32)
    field = T.FormantWarpField(torch.from_numpy(audio), 0.1)
    same = field(torch.zeros(field.cells)).numpy()
    inner = slice(600, -600)
    assert np.max(np.abs(same - audio)[inner]) < 1e-4 * np.abs(audio).max()

    freqs = np.fft.rfftfreq(len(audio[inner]), 1 / rate)

    def harmonic(x, hz):  # the partial's amplitude in the middle of the clip
        spectrum = np.abs(np.fft.rfft(x[inner] * np.hanning(len(x[inner]))))
        return spectrum[np.argmin(np.abs(freqs - hz))]

    def tilt_around_peak(scale):  # the partial above the resonance over the one below
        x = field(torch.full((field.cells,), scale)).numpy()
        return harmonic(x, 1350) / harmonic(x, 1050)

    # the resonance moves with the scale: the partial above it gains on the one below when
    # the formants go up, and loses when they go down
    assert tilt_around_peak(-0.08) < tilt_around_peak(0.0) / 1.3
    assert tilt_around_peak(0.08) > tilt_around_peak(0.0) * 1.3
    raised = field(torch.full((field.cells,), 0.15)).numpy()
    spectrum = np.abs(np.fft.rfft(raised[inner] * np.hanning(len(raised[inner]))))
    assert freqs[np.argmax(spectrum)] == pytest.approx(1350, abs=5)
    # and the partials stay on the harmonics of 150 Hz: the pitch did not move
    peaks = freqs[spectrum > 0.05 * spectrum.max()]
    assert np.all(np.abs(peaks / f0 - np.round(peaks / f0)) < 0.05)


def test_formant_craft_moves_toward_the_target_and_refuses_the_stream(capsys):
    _crafted_toward_the_target(T.Method("formant", ["toy"], steps=5, formant_pct=6))
    assert T.main(["--corpus", "emodb", "--data", "x", "--stream", "--methods", "formant-6"]) == 2
    assert "files only" in capsys.readouterr().err


def test_surrogate_variants_keep_the_forward_and_change_the_backward(tmp_path, monkeypatch):
    """`~linbp` computes the same logits with ReLU's backward as the identity; `~dropout`
    keeps dropout on (another sub-network per call) and batch norm in eval mode."""
    from plainsight_export import models as M

    cfg = M.default_features("compact")
    classes = ["anger", "neutral", "sadness"]
    model = M.build_model("compact", len(classes), cfg).eval()
    (tmp_path / "emodb").mkdir()
    M.save_checkpoint(
        tmp_path / "emodb" / "toy.pt", model, arch="compact", arch_kwargs={}, classes=classes,
        features=cfg, window_samples=32000, seed=0, corpus="emodb", role="reference", metrics={},
    )  # fmt: skip
    monkeypatch.setattr(T, "CHECKPOINTS", tmp_path)
    exact, linbp, drop = (T.load_surrogate("emodb", f"toy{v}") for v in ("", "~linbp", "~dropout"))
    assert exact.target == linbp.target == 1
    x = torch.tensor(_speechy(32000)[None])
    grads = []
    for s in (exact, linbp):
        xx = x.clone().requires_grad_(True)
        logits = s.logits(xx)
        grads.append(torch.autograd.grad(logits[0, 0], xx)[0])
    torch.testing.assert_close(exact.logits(x), linbp.logits(x))
    assert not torch.allclose(grads[0], grads[1])
    assert not torch.allclose(drop.logits(x), drop.logits(x))
    assert not any(m.training for m in drop.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="unknown surrogate variant"):
        T.load_surrogate("emodb", "toy~ghost")


def test_score_panel_only_reads_cached_clips(tmp_path, monkeypatch):
    """--score-panel final reports the final panel on clips crafted earlier (on the dev panel): it
    crafts nothing, scores masked and noise control, and refuses a method never crafted."""
    from types import SimpleNamespace

    from plainsight.evaluate import panel as panel_mod

    clips = [
        SimpleNamespace(audio=_speechy(16000, i), utt=SimpleNamespace(label="x")) for i in range(3)
    ]
    monkeypatch.setattr(T.P, "test_clips", lambda data, corpus, limit: clips)

    class Loudness:  # a 'member' whose UAR is the mean level it hears
        name = "emodb-attacker-final-loud-s0"

        def report(self, audios, labels):
            return {"uar": float(np.mean([np.abs(a).mean() for a in audios]))}

    monkeypatch.setattr(panel_mod, "load_panel", lambda corpus, which: [Loudness()])
    monkeypatch.setattr(T, "craft", lambda *a, **k: pytest.fail("scoring must not craft"))
    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(cache / "m.npz", **{f"clip{i}": 2 * c.audio for i, c in enumerate(clips)})
    args = SimpleNamespace(data="", corpus="emodb", limit=3, snr_db=38.0, methods=["m"],
                           cache=cache, out=tmp_path / "out", score_panel="final",
                           codec="none")  # fmt: skip
    out = T.score_cached(args)
    member = Loudness.name
    assert out["rows"]["m"]["masked"][member] > out["rows"]["clean"][member]
    assert member in out["rows"]["m"]["noise"]
    assert "| m |" in (tmp_path / "out" / "final_panel.md").read_text()
    args.methods = ["never-crafted"]
    with pytest.raises(SystemExit, match="craft never-crafted on the dev panel first"):
        T.score_cached(args)


def test_layered_gain_field_sums_its_layers_and_one_layer_is_the_gain_field():
    clip = torch.from_numpy(_speechy(40000))
    single = T.GainField(clip, 16, 0.1)
    layered = T.LayeredGainField(clip, [(16, 0.1), (2, 1.0)])
    fine_size = 16 * single.cells
    assert layered.size == fine_size + 2 * layered.layers[1][2][1]
    g = torch.from_numpy(np.random.default_rng(0).uniform(-3, 3, layered.size).astype(np.float32))
    fine, coarse = g[:fine_size], g[fine_size:]
    # the fine layer alone is the plain gain field
    only_fine = torch.cat([fine, torch.zeros_like(coarse)])
    torch.testing.assert_close(layered(only_fine), single(fine.reshape(16, -1)))
    # both layers: the dB maps add
    two = T.GainField(clip, 2, 1.0)
    db = (
        single.bands @ fine.reshape(16, -1) @ single.times
        + two.bands @ coarse.reshape(2, -1) @ two.times
    )
    torch.testing.assert_close(layered(g), single.apply(db))


def test_layered_gain_craft_keeps_each_layers_bound_and_moves_toward_the_target(monkeypatch):
    audio = _speechy(50000)
    surrogate = _surrogate()
    method = T.Method("layers", ["toy"], steps=5, gain_layers=((16, 0.1, 1.0), (2, 1.0, 4.0)))
    seen = {}
    original = T.optimise_field

    def spy(field, shape, most, *args):
        seen["most"] = most
        return original(field, shape, most, *args)

    monkeypatch.setattr(T, "optimise_field", spy)
    delta = T.craft(audio, 35.0, [surrogate], method, np.random.default_rng(0))
    assert delta.shape == audio.shape
    cells = [int(np.ceil(len(audio) / 16000 / c)) + 1 for c in (0.1, 1.0)]
    expected = np.concatenate([np.full(16 * cells[0], 1.0), np.full(2 * cells[1], 4.0)])
    np.testing.assert_array_equal(seen["most"].numpy(), expected)
    assert _attack_loss(surrogate, audio + delta) < _attack_loss(surrogate, audio)
    # a gain of at most 1 + 4 dB scales no STFT bin by more than 10 ** (5 / 20)
    assert np.sqrt(np.mean(delta**2)) < (10 ** (5 / 20) - 1) * np.sqrt(np.mean(audio**2)) * 1.05


def test_layered_gain_methods_refuse_the_stream(capsys):
    assert (
        T.main(["--corpus", "emodb", "--data", "x", "--stream", "--methods", "gain-16x100+2x1000"])
        == 2
    )
    assert "no --stream form" in capsys.readouterr().err


def test_admix_mixes_other_audio_at_each_level_and_keeps_the_bound():
    audio = _speechy(40000)
    pool = np.linspace(0.0, 1.0, 100001, dtype=np.float32)  # each sample tells its place
    method = T.Method("admix", ["toy"], steps=5, admix=0.2, admix_pool=pool)
    adv = torch.from_numpy(audio)
    starts = np.zeros(1, int)
    mixes = list(T.mixtures(adv, starts, method, np.random.default_rng(0)))
    assert len(mixes) == method.admix_copies * method.admix_scales
    for i, (x, st) in enumerate(mixes):
        level = 0.5 ** (i % method.admix_scales)
        other = (x.numpy() / level - audio) / 0.2  # the mixed-in audio, recovered
        first = int(round(float(other[0]) * 100000))
        np.testing.assert_allclose(other, pool[first : first + len(audio)], atol=1e-4)
        np.testing.assert_array_equal(st, starts)
    # without admix: the method's transformations, as before
    plain = list(T.mixtures(adv, starts, T.Method("p", ["toy"]), np.random.default_rng(0)))
    assert len(plain) == 1 and torch.equal(plain[0][0], adv)
    surrogate = _surrogate()
    delta = T.craft(audio, 35.0, [surrogate], method, np.random.default_rng(0))
    _, bound, _, _ = T.plan(audio, 35.0)
    assert np.all(np.abs(delta) <= bound + 1e-7)
    assert _attack_loss(surrogate, audio + delta) < _attack_loss(surrogate, audio)


def test_compare_bootstraps_the_dev_panel_difference_of_two_cached_methods(tmp_path, monkeypatch):
    from types import SimpleNamespace

    labels = ["a", "b"] * 4
    clips = [
        SimpleNamespace(audio=_speechy(16000, i), utt=SimpleNamespace(label=lab))
        for i, lab in enumerate(labels)
    ]
    monkeypatch.setattr(T.P, "test_clips", lambda data, corpus, limit: clips)

    class Loud:  # says "b" when the clip is loud
        name = "emodb-attacker-dev-loud-s0"
        classes = ["a", "b"]

        def clip_logits(self, audios):
            return np.array([[0.0, 1.0] if np.abs(x).mean() > 0.1 else [1.0, 0.0] for x in audios])

    monkeypatch.setattr(T, "dev_panel", lambda corpus: ([Loud()], "dev"))
    cache = tmp_path / "cache"
    cache.mkdir()
    quiet = {f"clip{i}": 0.01 * c.audio for i, c in enumerate(clips)}
    level = {"a": 0.002, "b": 0.2}  # mean |sample| of each class's clips under `right`

    def at_level(clip):
        return level[clip.utt.label] * clip.audio / np.abs(clip.audio).mean()

    right = {f"clip{i}": at_level(c) for i, c in enumerate(clips)}
    np.savez(cache / "quiet.npz", **quiet)
    np.savez(cache / "right.npz", **right)
    args = SimpleNamespace(data="", corpus="emodb", limit=8, snr_db=38.0, seed=0, cache=cache,
                           out=tmp_path / "out", compare=["quiet", "right"])  # fmt: skip
    out = T.compare_cached(args)
    # quiet: always "a" (UAR 0.5); right: every clip right (UAR 1.0): +50 points, every draw
    assert out["panel_mean"] == pytest.approx({"mean": 50.0, "low": 50.0, "high": 50.0})
    assert (
        "| panel mean | +50.0 [+50.0, +50.0] |"
        in (tmp_path / "out" / "compare-quiet-vs-right.md").read_text()
    )
    args.compare = ["quiet", "never-crafted"]
    with pytest.raises(SystemExit, match="craft never-crafted first"):
        T.compare_cached(args)


def _voice_in_noise(rate: int = 16000, seconds: float = 1.5) -> np.ndarray:
    """Harmonics of 150 Hz over a white-noise floor 30 dB down (a breathy vowel)."""
    t = np.arange(int(rate * seconds)) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 30))
    floor = np.random.default_rng(0).normal(0, 0.03 * np.std(voice), len(t))
    return (0.05 * (voice + floor)).astype(np.float32)


def test_harmonic_field_is_a_gain_field_when_peaks_and_valleys_agree():
    audio = torch.from_numpy(_voice_in_noise())
    split = T.HarmonicGainField(audio, 16, 0.1, contrast=False)
    plain = T.GainField(audio, 16, 0.1)
    assert split.shape == (32, plain.cells)
    inner = slice(600, -600)
    np.testing.assert_allclose(
        split(torch.zeros(split.shape)).numpy()[inner], audio.numpy()[inner], atol=1e-5
    )
    g = torch.from_numpy(
        np.random.default_rng(1).uniform(-3, 3, (16, plain.cells)).astype(np.float32)
    )
    np.testing.assert_allclose(split(torch.cat([g, g])).numpy(), plain(g).numpy(), atol=1e-5)


def test_harmonic_contrast_changes_how_harmonic_the_voice_is_not_its_level():
    audio = _voice_in_noise()
    field = T.HarmonicGainField(torch.from_numpy(audio), 16, 0.1, contrast=True)
    inner = slice(1000, -1000)
    freqs = np.fft.rfftfreq(len(audio[inner]), 1 / 16000)
    on = np.abs(np.abs(freqs / 150 - np.round(freqs / 150)) * 150) < 10  # near a harmonic
    off = np.abs(np.abs(freqs / 150 - np.round(freqs / 150)) * 150) > 40  # between them

    def harmonicity(x):  # energy on the harmonics over energy between them, dB
        power = np.abs(np.fft.rfft(x[inner] * np.hanning(len(x[inner])))) ** 2
        return 10 * np.log10(power[on & (freqs < 4000)].sum() / power[off & (freqs < 4000)].sum())

    def level(x):
        return 10 * np.log10(np.mean(x[inner] ** 2))

    pressed = field(torch.full(field.shape, 3.0)).numpy()
    breathy = field(torch.full(field.shape, -3.0)).numpy()
    # valleys 3 dB down, peaks 3 dB up (the STFT's bins also hold the floor under each partial)
    assert harmonicity(pressed) > harmonicity(audio) + 2
    assert harmonicity(breathy) < harmonicity(audio) - 2
    assert abs(level(pressed) - level(audio)) < 3.5  # peaks carry the level: +3 dB at most


def test_harmonic_craft_moves_toward_the_target_and_refuses_the_stream(capsys):
    for kind in ("split", "contrast"):
        method = T.Method(kind, ["toy"], steps=5, gain_db=3.0, harmonic=kind)
        _crafted_toward_the_target(method)
    argv = ["--corpus", "emodb", "--data", "x", "--stream", "--methods", "harmonic-split-16x100"]
    assert T.main(argv) == 2
    assert "files only" in capsys.readouterr().err


def test_band_levels_follow_where_the_speech_is_loud():
    t = np.arange(3 * 16000) / 16000
    audio = (0.1 * np.sin(2 * np.pi * 300 * t) * (t > 1.5)).astype(np.float32)  # 2nd half
    field = T.GainField(torch.from_numpy(audio), 16, 0.1)
    levels = T.band_levels(field)
    assert levels.shape == (16, field.cells)
    band = int(levels[:, -5].argmax())  # the 300 Hz tone's band, late in the clip
    assert levels[band, -5] > levels[band, 5] + 3  # 30 dB louder there than in the silence
    assert float(levels.min()) >= float(levels.max()) - T.LEVEL_RANGE_DB / 10 - 1e-5


def test_gain_generator_learns_a_field_that_moves_unseen_clips(monkeypatch):
    surrogate = T.Surrogate("spectral-toy", _SpectralToy().eval(), target=1)
    train = [_speechy(n, seed) for seed, n in enumerate((20000, 36000, 50000))]
    method = T.Method("gen", ["spectral-toy"], steps=0, gain_db=3.0, generator=True)
    monkeypatch.setattr(T, "GENERATOR_STEPS", 0)
    untrained, _ = T.train_gain_generator(train, [surrogate], method, seed=0)
    monkeypatch.setattr(T, "GENERATOR_STEPS", 100)
    generator, history = T.train_gain_generator(train, [surrogate], method, seed=0)
    assert len(history) == 1 and np.isfinite(history).all()
    clip = _speechy(45000, seed=9)  # not a training clip
    rng = np.random.default_rng(0)
    delta = T.craft_generated(clip, generator, [surrogate], method, rng)
    assert delta.shape == clip.shape
    # a gain within +-3 dB: no sample grows by more than 10 ** (3 / 20) - 1 of the loudest
    assert np.abs(delta).max() <= (10 ** (3 / 20) - 1) * np.abs(clip).max() * 1.5
    before = T.craft_generated(clip, untrained, [surrogate], method, rng)
    assert _attack_loss(surrogate, clip + delta) < _attack_loss(surrogate, clip + before) - 0.05
    # steps > 0 refine the generator's field from where it left it
    refined = T.Method("gen+5", ["spectral-toy"], steps=5, gain_db=3.0, generator=True)
    more = T.craft_generated(clip, generator, [surrogate], refined, rng)
    assert _attack_loss(surrogate, clip + more) < _attack_loss(surrogate, clip + delta)


def test_generator_methods_refuse_the_stream(capsys):
    argv = ["--corpus", "emodb", "--data", "x", "--stream", "--methods", "gen-gain-16x100"]
    assert T.main(argv) == 2
    assert "files only" in capsys.readouterr().err
