"""The gain stage (plainsight.gainfield, `Masker(gain_db=...)`): an exact identity at 0 dB,
an exact gradient, gains within the bound, a push toward the objective, and on the stream:
one grid for the whole stream, cells already sent never change, and the stream's contracts
(causal, chunking-invariant, as many samples out as in)."""

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


def test_a_stretch_of_a_signal_shares_the_grid_of_the_whole():
    """A field over signal[a:] placed at origin a on the clock gains that stretch exactly as
    the whole signal's field does (frames aligned: a is a whole number of hops), away from
    the stretch's first frames, which lack their past."""
    x = _voiced(9000)
    whole = GainField(x, RATE)
    g = np.random.default_rng(3).uniform(-3, 3, whole.shape)
    a = 128 * 27
    part = GainField(x[a:], RATE, origin_s=a / RATE)
    assert part.first_cell == int(a / RATE / 0.1) and part.cells == whole.cells - part.first_cell
    gained = part(g[:, part.first_cell :])
    np.testing.assert_allclose(gained[512:], whole(g)[a + 512 :], atol=1e-5)


@pytest.fixture(scope="module")
def gain_masker():
    from plainsight.masker import Masker
    from test_runtime_toymodel import bundled_model_dir

    return Masker(model=bundled_model_dir(), backend="onnx", gain_db=3.0)


def test_stream_gain_stage_keeps_the_stream_contracts(gain_masker):
    from plainsight.masker import Masker
    from test_runtime_toymodel import bundled_model_dir
    from test_stream_runtime import processor_output, speechlike_pcm

    pcm = speechlike_pcm(1.3)  # not a whole number of hops: the rest is flushed
    out = processor_output(gain_masker, pcm, [len(pcm)])
    assert out.dtype == np.dtype("<i2") and len(out) == len(pcm)
    again = processor_output(gain_masker, pcm, [1, 3999, 2, 777, 5000])
    assert np.array_equal(out, again)  # a pure function of the samples, not the chunks
    other = pcm.copy()
    other[8000:] = -other[8000:]
    changed = processor_output(gain_masker, other, [len(other)])
    assert np.array_equal(out[:8000], changed[:8000]) and not np.array_equal(out, changed)

    def snr(y, delay=0):
        x = pcm[: len(pcm) - delay].astype(np.float64)
        return 10 * np.log10(np.mean(x**2) / np.mean((y[delay:] - x) ** 2))

    from plainsight.stream import StreamProcessor

    delay = StreamProcessor(gain_masker, RATE).latency_samples - 4000
    assert delay == 256  # the stage's look-ahead, 16 ms
    assert np.abs(out[:delay]).max() < np.abs(out).max() / 20  # masked silence leads
    plain = processor_output(Masker(model=bundled_model_dir(), backend="onnx"), pcm, [len(pcm)])
    assert snr(out, delay) < 25.0 < snr(plain)  # re-balanced far beyond the mask's 35 dB
    assert snr(out) < 5.0  # (misaligned by the look-ahead: nothing like the input)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_stream_gain_stage_at_other_rates_keeps_count_and_chunking(gain_masker, rate):
    from plainsight.bench import synthetic_speechlike
    from plainsight.stream import StreamProcessor, to_pcm

    pcm = to_pcm(synthetic_speechlike(1.2, rate, 3))

    def run(chunks):
        proc = StreamProcessor(gain_masker, rate)
        out = [
            o
            for first in range(0, len(pcm), chunks)
            for o in proc.push(pcm[first : first + chunks])
        ]
        return np.concatenate([*out, proc.flush()]), proc

    out, proc = run(len(pcm))
    assert len(out) == len(pcm) and np.array_equal(out, run(997)[0])
    delay = proc.latency_samples - proc.hop
    assert delay >= 0.016 * rate  # whole frames after each hop, at this rate too
    x, y = pcm[: len(pcm) - delay].astype(np.float64), out[delay:].astype(np.float64)
    assert 5.0 < 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2)) < 25.0


def test_stream_gain_cells_already_sent_never_change(gain_masker):
    from plainsight.stream import StreamProcessor
    from test_stream_runtime import speechlike_pcm

    pcm = speechlike_pcm(4.0, seed=2)
    proc = StreamProcessor(gain_masker, RATE)
    before: dict = {}
    for first in range(0, len(pcm), proc.hop):
        proc.process(pcm[first : first + proc.hop])
        cells = proc.gain_cells
        kept = [k for k in before if k in cells]
        assert (kept or not before) and all(np.array_equal(before[k], cells[k]) for k in kept)
        assert max(cells) > max(before, default=-99)  # this hop chose cells of its own
        assert all(np.abs(v).max() <= 3.0 + 1e-5 for v in cells.values())
        assert len(cells) <= 8  # old cells are forgotten: memory stays bounded
        before = {k: v.copy() for k, v in cells.items()}
    moved = np.concatenate([v for v in before.values()])
    assert np.abs(moved).max() > 1.0  # the stage did set gains


def test_stream_gain_equals_the_whole_clips_field_at_the_hop_seams(monkeypatch):
    """Found measuring the live path: a hop's last frames saw zeros for the future, so its
    last 16 ms were gained from half-empty frames (error 21-37 dB below the speech at every
    seam, PESQ-wb of the gain alone 4.32 instead of 4.50 on EmoDB). With the stage's
    look-ahead the stream's output is the whole clip's field with the stream's cells, up to
    frame alignment and 16-bit rounding, everywhere."""
    from plainsight.masker import Masker
    from plainsight.stream import StreamProcessor, to_pcm
    from test_runtime_toymodel import bundled_model_dir

    masker = Masker(model=bundled_model_dir(), backend="onnx", gain_db=3.0)
    # no budget for the mask: what goes out is the gain field alone
    monkeypatch.setattr(masker, "budget", lambda windows, *args: np.zeros_like(windows))
    cells: dict = {}
    rebalance_and_perturb_hop = masker.rebalance_and_perturb_hop

    def recording(*args, **kwargs):
        out = rebalance_and_perturb_hop(*args, **kwargs)
        cells.update(args[5])
        return out

    monkeypatch.setattr(masker, "rebalance_and_perturb_hop", recording)
    x = _voiced(RATE * 3, seed=4)
    x *= 1 + 0.5 * np.sin(2 * np.pi * 1.3 * np.arange(len(x)) / RATE)  # not stationary
    proc = StreamProcessor(masker, RATE)
    pcm = to_pcm(x)
    out = np.concatenate([*proc.push(pcm), proc.flush()]).astype(np.float32) / 32768
    delay = proc.latency_samples - proc.hop
    sent = out[delay:]  # the stream's output, aligned with its input
    raw = pcm[: len(sent)].astype(np.float32) / 32768
    field = GainField(raw, RATE, origin_s=delay / RATE)  # the grid's clock runs delayed
    known = [cells.get(field.first_cell + j, np.zeros(16, np.float32)) for j in range(field.cells)]
    g = np.stack(known, axis=1)
    assert np.abs(g).max() > 1.0
    error = sent - field(g)
    for end in range(proc.hop, len(sent) - proc.hop, proc.hop):
        speech = np.mean(raw[end - proc.hop : end].astype(np.float64) ** 2)
        if speech < 1e-4:
            continue
        seam = np.mean(error[end - 256 : end].astype(np.float64) ** 2)
        assert 10 * np.log10(speech / max(seam, 1e-20)) > 40.0, f"seam at {end}"


def test_the_gain_stage_costs_the_stream_no_graph_call(monkeypatch):
    """The gain stage leaves the past as it was and moves with the mask's steps: one
    `hop_past` (one hop_fixed call) per hop, and one step-graph call per mask step, as
    without the stage (two loops took GAIN_STEPS more calls per hop)."""
    from plainsight.masker import GAIN_STEPS, Masker
    from test_runtime_toymodel import bundled_model_dir
    from test_stream_runtime import processor_output, speechlike_pcm

    masker = Masker(model=bundled_model_dir(), backend="onnx", gain_db=3.0)
    member = masker.members[0]
    calls = {"hop_fixed": 0, "hop_crop": 0}
    for name in calls:
        run = getattr(member, name).run

        def counted(*args, name=name, run=run):
            calls[name] += 1
            return run(*args)

        monkeypatch.setattr(getattr(member, name), "run", counted)
    processor_output(masker, speechlike_pcm(1.0)[:8000], [])
    assert masker.stream_steps >= GAIN_STEPS
    assert calls == {"hop_fixed": 2, "hop_crop": 2 * masker.stream_steps}


def test_stream_gain_stage_moves_the_window_toward_neutral(gain_masker):
    from plainsight.masker import softmax

    m = gain_masker
    x = _voiced(m.window)
    hop = 4000
    member = m.members[0]
    neutral = member.spec.classes.index("neutral")

    def log_p_neutral(y):
        return float(np.log(softmax(m._logits(member, y[None].astype(np.float32)))[0, neutral]))

    chosen: dict = {}
    no_mask = np.zeros(m.window, np.float32)
    gained = m.rebalance_and_perturb_hop(x, no_mask, x, hop, 12345, chosen)
    assert gained.shape == (hop,) and chosen
    y = x.copy()
    y[-hop:] = gained
    # random fields of the same bound on the same hop are the control
    field = GainField(x[-hop - 512 :], RATE)
    controls = []
    for seed in range(3):
        z = x.copy()
        z[-hop:] = field(np.random.default_rng(seed).choice([-3.0, 3.0], field.shape))[-hop:]
        controls.append(log_p_neutral(z))
    assert log_p_neutral(y) > max(log_p_neutral(x), *controls) + 0.02


def test_stream_cli_runs_the_gain_stage():
    import subprocess
    import sys

    from test_stream_runtime import speechlike_pcm

    pcm = speechlike_pcm(1.0)
    proc = subprocess.run(
        [sys.executable, "-m", "plainsight.cli", "stream", "--mask-strength", "rebalance"],
        input=pcm.tobytes(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = np.frombuffer(proc.stdout, "<i2")
    assert len(out) == len(pcm) and not np.array_equal(out, pcm)


def test_stream_hop_is_the_field_plus_a_mask_within_its_bound(gain_masker):
    """One loop chooses both: what the hop sends is the gain field of the cells it chose,
    plus a mask within the budget (and only where the budget is)."""
    from plainsight.shaping import N_FFT

    m = gain_masker
    x = _voiced(m.window, seed=3)
    hop, origin = 4000, 48000
    bound = np.zeros(m.window, np.float32)
    bound[-hop:] = 0.002
    bound[-hop : -hop + 500] = 0.0  # a stretch without budget
    chosen: dict = {}
    out = m.rebalance_and_perturb_hop(x, bound, x, hop, origin, chosen)
    field = GainField(x[-(hop + N_FFT) :], RATE, origin_s=(origin + m.window - hop - N_FFT) / RATE)
    g = np.stack([chosen[field.first_cell + j] for j in range(field.cells)], axis=1)
    assert np.abs(g).max() > 1.0
    mask = out - field(g)[-hop:]
    assert np.all(np.abs(mask) <= bound[-hop:] + 1e-6)
    assert np.abs(mask[:500]).max() < 1e-6
    assert np.mean(np.abs(mask[500:])) > 0.3 * 0.002
