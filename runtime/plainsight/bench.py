"""Benchmarks: real-time factor of mask and stream, peak RSS, import + model load time.

RTF is wall time (what a device with a free core sees); *_rtf_cpu is this process's CPU
time, which stays meaningful on a machine shared with other jobs.

Each backend is measured in a fresh subprocess (`python -m plainsight.bench --worker`), so
the peak RSS and the startup time belong to that backend alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def synthetic_speechlike(seconds: float, rate: int = 16000, seed: int = 0):
    """Harmonic tones with a syllable-rate envelope and pauses (speed does not depend on it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) * (np.sin(2 * np.pi * 0.25 * t) > -0.5)
    audio = 0.15 * voiced * envelope + 0.003 * rng.standard_normal(len(t))
    return audio.astype(np.float32)


def worker(
    backend: str,
    threads: int,
    seconds: float,
    hop_ms: float,
    strength: str,
    model: str = "default",
    start: float | None = None,
    privacy: str = "mask",
) -> dict:
    """Measure in this process; `start` is taken before `import plainsight` when possible."""
    start = time.perf_counter() if start is None else start
    from plainsight.masker import Masker  # timed: import + model load

    masker = Masker(
        model=model, backend=backend, threads=threads, strength=strength, privacy=privacy
    )
    startup = time.perf_counter() - start
    import resource

    import numpy as np

    from plainsight.masker import window_starts
    from plainsight.stream import StreamProcessor, to_pcm

    audio = synthetic_speechlike(seconds, masker.sample_rate)
    masker.mask(audio[: masker.window], masker.sample_rate)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    masker.mask(audio, masker.sample_rate)
    mask_s, mask_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    stream = StreamProcessor(masker, masker.sample_rate, hop_ms)
    pcm = to_pcm(audio)
    hop = stream.hop
    n_hops = len(pcm) // hop
    stream.process(pcm[:hop])  # warm-up
    stream.busy_s = 0.0
    c0 = time.process_time()
    for i in range(n_hops):
        stream.process(pcm[i * hop : (i + 1) * hop])
    stream_cpu_s = time.process_time() - c0
    stream_audio_s = n_hops * hop / masker.sample_rate
    stream_rows = {
        "stream_rtf": round(stream.busy_s / stream_audio_s, 5),
        "stream_rtf_cpu": round(stream_cpu_s / stream_audio_s, 5),
        "stream_ms_per_hop": round(1000 * stream.busy_s / n_hops, 2),
    }
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tier = {"privacy": privacy}
    if privacy == "neutralize":  # the stage alone, in the stream form, on the same audio
        from plainsight.neutralize import Neutralizer

        stage = Neutralizer(masker.sample_rate, masker.neutralize_strength)
        c0 = time.process_time()
        for i in range(n_hops):
            stage.process(audio[i * hop : (i + 1) * hop])
        stage_cpu_s = time.process_time() - c0
        tier["neutralize_strength"] = masker.neutralize_strength
        stage_audio_s = n_hops * hop / masker.sample_rate
        tier["neutralize_stream_rtf_cpu"] = round(stage_cpu_s / stage_audio_s, 5)
        latency = stream.latency_samples / masker.sample_rate
        tier["stream_latency_ms"] = round(1000 * latency, 1)
    settings = masker.settings()
    calls = 1 + settings["steps"] if settings["objective"] == "untargeted" else settings["steps"]
    audio_s = len(audio) / masker.sample_rate
    mask_windows = len(window_starts(len(audio), masker.window, masker.hop))
    return {
        "backend": backend,
        "threads": threads,
        "settings": settings,
        "model_calls_per_window": calls,
        "mask_windows_per_audio_s": round(mask_windows / audio_s, 3),
        "audio_s": round(audio_s, 3),
        "import_and_load_s": round(startup, 4),
        "mask_rtf": round(mask_s / audio_s, 5),
        "mask_rtf_cpu": round(mask_cpu_s / audio_s, 5),
        "stream_hop_ms": hop_ms,
        **stream_rows,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "numpy": np.__version__,
        **tier,
    }


def run_all(
    backends,
    threads: int = 1,
    seconds: float = 20.0,
    hop_ms: float = 250.0,
    strength: str = "medium",
    model: str = "default",
    tiers=("mask",),
) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    results = []
    for backend in backends:
        for privacy in tiers:
            cmd = [
                sys.executable, "-c", _WORKER_CODE, "--worker", backend,
                "--threads", str(threads), "--seconds", str(seconds), "--hop-ms", str(hop_ms),
                "--strength", strength, "--model", model, "--privacy", privacy,
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
                results.append({"backend": backend, "privacy": privacy, "error": lines[-1]})
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


# Starts the clock before anything of plainsight (or numpy) is imported.
_WORKER_CODE = (
    "import sys, time; _t0 = time.perf_counter(); import plainsight.bench as b; "
    "sys.exit(b._worker_main(sys.argv[1:], _t0))"
)


def _worker_main(argv: list[str], start: float | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m plainsight.bench")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hop-ms", type=float, default=250.0)
    parser.add_argument("--strength", default="medium")
    parser.add_argument("--model", default="default")
    parser.add_argument("--privacy", default="mask")
    args = parser.parse_args(argv)
    print(
        json.dumps(
            worker(
                args.worker,
                args.threads,
                args.seconds,
                args.hop_ms,
                args.strength,
                args.model,
                start,
                args.privacy,
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
