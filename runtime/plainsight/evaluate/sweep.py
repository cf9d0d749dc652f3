"""`plainsight evaluate --sweep`: methods x objectives x budgets, envelope, ensembles, and
the gain stage.

Every configuration masks the same class-balanced clips through plainsight.Masker and is
scored white-box, on every held-out attacker and on the same-SNR noise control; quality
(PESQ-wb/STOI) on the first clips; WER optionally (--asr-limit > 0 on the sweep costs time).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from plainsight import corpora
from plainsight.evaluate import metrics
from plainsight.evaluate.pipeline import (
    find_artifact,
    mask_clips,
    noise_control,
    quality,
    score,
    test_clips,
    transcribe_all,
)
from plainsight.evaluate.report import atomic_write_bytes, num, pct, save_figure, write_json
from plainsight.evaluate.run import Progress, _uars, build_scorers, json_ready
from plainsight.masker import Masker

SWEEP_BUDGETS = (45.0, 40.0, 35.0, 30.0)
SWEEP_DEFAULT_LIMIT = {"emodb": 70, "ravdess": 80}
SWEEP_PESQ_CLIPS = 24
SWEEP_STOI_CLIPS = 8
METHODS = ("fgsm", "ifgsm", "mifgsm")
FAMILIES = ("method x objective", "envelope", "ensemble", "gain field")
SWEEP_GAINS_DB = (3.0, 5.0)  # the gain stage's bounds (plainsight.gainfield), then the mask


def configurations(
    base: dict, extra_models: list[str], budgets=SWEEP_BUDGETS, families=None
) -> list[dict]:
    """The sweep grid: one-factor families around the operating point's steps."""
    objectives = ["untargeted", "neutral", "uniform"]
    steps = base.get("steps") or 5
    configs = []
    for snr in budgets:
        for method in METHODS:
            for objective in objectives:
                configs.append(
                    {
                        "family": "method x objective",
                        "method": method,
                        "objective": objective,
                        "steps": 1 if method == "fgsm" else steps,
                        "snr_db": snr,
                        "envelope": False,
                    }
                )
        for objective in objectives:
            configs.append(
                {
                    "family": "envelope",
                    "method": "ifgsm",
                    "objective": objective,
                    "steps": steps,
                    "snr_db": snr,
                    "envelope": True,
                }
            )
        for models in extra_models:
            for objective in objectives:
                configs.append(
                    {
                        "family": "ensemble",
                        "method": "ifgsm",
                        "objective": objective,
                        "steps": steps,
                        "snr_db": snr,
                        "envelope": False,
                        "model": models,
                    }
                )
        for gain_db in SWEEP_GAINS_DB:
            configs.append(
                {
                    "family": "gain field",
                    "method": "ifgsm",
                    "objective": "neutral",
                    "steps": steps,
                    "snr_db": snr,
                    "envelope": False,
                    "gain_db": gain_db,
                }
            )
    if families:
        unknown = set(families) - {c["family"] for c in configs} - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown sweep families {sorted(unknown)}; choose from {FAMILIES}")
        configs = [c for c in configs if c["family"] in families]
    return configs


def run_sweep(args, base: dict, out: Path, command: str, progress: bool) -> list[Path]:
    corpus = args.corpus
    limit = SWEEP_DEFAULT_LIMIT[corpus] if args.limit is None else args.limit
    clips = test_clips(args.data, corpus, limit)
    labels = [c.utt.label for c in clips]
    clean = [c.audio for c in clips]
    ensembles = []
    seed_cnn = find_artifact(corpus, "seed-cnn")
    single = base["model"]
    if seed_cnn is not None:
        ensembles.append(f"{single},{seed_cnn}")
    if args.sweep_models:
        ensembles += [m.strip() for m in args.sweep_models.split(";") if m.strip()]
    budgets = SWEEP_BUDGETS
    if getattr(args, "sweep_budgets", None):
        budgets = tuple(float(b) for b in args.sweep_budgets.split(","))
    families = None
    if getattr(args, "sweep_families", None):
        families = {f.strip() for f in args.sweep_families.split(",")}
    configs = configurations(base, ensembles, budgets, families)
    # Transfer scorers: the attackers only (so ensembles and single face the same judges).
    from plainsight.evaluate.run import EvalConfig

    probe = Masker(**(base | {"model": single}))
    panel = getattr(args, "panel", None)  # dev only: the final panel never chooses anything
    cfg = EvalConfig(
        corpus=corpus, data=args.data, masker=base, attackers=args.attackers, panel=panel
    )
    whitebox, transfer = build_scorers(probe, corpus, cfg, probe.backend, probe.threads)
    if panel is None:
        transfer = [s for s in transfer if s.role == "attacker"] or transfer
    asr_limit = getattr(args, "sweep_asr_limit", 0) or 0
    n_asr = min(asr_limit, len(clips)) if (not args.no_asr and asr_limit) else 0
    transcriber = None
    if n_asr:
        from plainsight.evaluate.asr import Transcriber, wer

        transcriber = Transcriber(
            args.whisper_dir, compute_type=args.whisper_compute, threads=args.whisper_threads
        )
        lang = corpora.LANGUAGES[corpus]
        refs = [c.reference for c in clips[:n_asr]]
        clean_wer = wer(refs, transcribe_all(transcriber, clean[:n_asr], lang))
    bar = Progress(progress, len(configs) * len(clips))
    rows = []
    started = time.perf_counter()
    clean_scores = {
        "whitebox": _uars(score(whitebox, clean, labels)),
        "transfer": _uars(score(transfer, clean, labels)),
    }
    try:
        for conf in configs:
            bar.stage(f"{conf['family']} {conf['method']} {conf['objective']} {conf['snr_db']:g}")
            kwargs = base | {k: conf[k] for k in ("method", "objective", "steps", "envelope")}
            kwargs |= {"snr_db": conf["snr_db"], "eps": None, "model": conf.get("model", single)}
            kwargs["gain_db"] = conf.get("gain_db", base.get("gain_db"))
            masker = Masker(**kwargs)
            masked = mask_clips(masker, clips, bar)
            noisy = noise_control(clean, masked.audios)
            q = quality(clean, masked.audios, SWEEP_PESQ_CLIPS, SWEEP_STOI_CLIPS)
            row = conf | {
                "models": masker.settings()["models"],
                "whitebox": _uars(score(whitebox, masked.audios, labels)),
                "transfer": _uars(score(transfer, masked.audios, labels)),
                "noise_transfer": _uars(score(transfer, noisy, labels)),
                "noise_whitebox": _uars(score(whitebox, noisy, labels)),
                "median_snr_db": metrics.distribution(
                    [metrics.snr_db(c, m) for c, m in zip(clean, masked.audios, strict=True)]
                )["median"],
                "median_pesq_wb": q["pesq_wb"]["median"],
                "median_stoi": q["stoi"]["median"],
                "rtf": masked.mask_seconds / sum(len(c) / 16000 for c in clean),
            }
            if transcriber is not None:
                hyps = transcribe_all(transcriber, masked.audios[:n_asr], lang)
                row["wer"] = wer(refs, hyps)
                row["wer_clean"] = clean_wer
            rows.append(row)
    finally:
        bar.close()
    result = json_ready(
        {
            "corpus": corpus,
            "clips": len(clips),
            "chance_uar": 1.0 / len(probe.classes),
            "base": base,
            "clean": clean_scores,
            "whitebox_models": [s.name for s in whitebox],
            "transfer_models": [s.name for s in transfer],
            "rows": rows,
            "asr_clips": n_asr,
            "spectrogram_reference": "missing: no features->logits graph exported (see report)",
            "seconds": time.perf_counter() - started,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", result)
    atomic_write_bytes(out / "sweep.md", sweep_markdown(result, command).encode())
    written = [out / "sweep.json", out / "sweep.md", *sweep_plots(result, out)]
    print(sweep_markdown(result, command), file=sys.stdout)
    return written


def _mean(values) -> float:
    return float(np.mean(values)) if values else float("nan")


def sweep_markdown(result: dict, command: str) -> str:
    chance = result["chance_uar"]
    tnames = result["transfer_models"]
    lines = [
        f"# plainsight evaluate --sweep: {result['corpus']}",
        "",
        f"Command: `{command}`",
        "",
        f"{result['clips']} class-balanced held-out clips; chance UAR {pct(chance)} %. "
        "UAR in %, masked [same-SNR noise control]. White-box = the model(s) whose gradient "
        f"was used ({', '.join(result['whitebox_models'])} for single-model rows). "
        f"Clean UAR: white-box "
        + ", ".join(f"{n} {pct(v['uar'])}" for n, v in result["clean"]["whitebox"].items())
        + "; attackers "
        + ", ".join(f"{n} {pct(v['uar'])}" for n, v in result["clean"]["transfer"].items())
        + ".",
        "",
        "| family | method | objective | steps | SNR set | env | models | median SNR | PESQ-wb "
        "| STOI | WER | white-box UAR | MI wb (bits) | " + " | ".join(tnames) + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(tnames),
    ]
    for r in result["rows"]:
        wb_name = next(iter(r["whitebox"]))
        wb = r["whitebox"][wb_name]
        cells = [
            f"{pct(r['transfer'][n]['uar'])} [{pct(r['noise_transfer'][n]['uar'])}]" for n in tnames
        ]
        wer = pct(r.get("wer")) if "wer" in r else "-"
        lines.append(
            f"| {r['family']} | {r['method']} | {r['objective']} | {r['steps']} | "
            f"{r['snr_db']:g} | {'on' if r['envelope'] else 'off'} | {'+'.join(r['models'])} | "
            f"{num(r['median_snr_db'], 1)} | {num(r['median_pesq_wb'])} | "
            f"{num(r['median_stoi'], 3)} | {wer} | {pct(wb['uar'])} "
            f"[{pct(r['noise_whitebox'][wb_name]['uar'])}] | {num(wb['mi_bits'])} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", f"Spectrogram-domain reference: {result['spectrogram_reference']}.", ""]
    return "\n".join(lines)


def sweep_plots(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    chance = 100 * result["chance_uar"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    groups: dict[tuple, list] = {}
    for r in rows:
        key = (r["family"], r["method"], r["objective"], "+".join(r["models"]))
        groups.setdefault(key, []).append(r)
    for key, items in groups.items():
        items = sorted(items, key=lambda r: -r["snr_db"])
        x = [r["snr_db"] for r in items]
        label = f"{key[1]} {key[2]}" + (" env" if key[0] == "envelope" else "")
        label += " ens" if key[0] == "ensemble" else ""
        wb = [100 * next(iter(r["whitebox"].values()))["uar"] for r in items]
        tr = [100 * _mean([v["uar"] for v in r["transfer"].values()]) for r in items]
        axes[0].plot(x, wb, "-o", ms=3, label=label)
        axes[1].plot(x, tr, "-o", ms=3, label=label)
    noise = {}
    for r in rows:
        noise.setdefault(r["snr_db"], []).append(
            _mean([v["uar"] for v in r["noise_transfer"].values()])
        )
    xs = sorted(noise, reverse=True)
    axes[1].plot(xs, [100 * _mean(noise[x]) for x in xs], "k:", lw=2, label="noise control")
    for ax, title in zip(axes, ("white-box UAR", "mean attacker UAR"), strict=True):
        ax.axhline(chance, color="grey", ls="--", lw=0.8)
        ax.invert_xaxis()
        ax.set_xlabel("SNR budget (dB)")
        ax.set_title(f"{result['corpus']}: {title}")
    axes[0].set_ylabel("UAR %")
    axes[1].legend(fontsize=6, ncol=2)
    return [save_figure(fig, out / "sweep.png")]
