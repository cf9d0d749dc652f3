"""Write an evaluation result as JSON, a Markdown summary and PNG plots (atomically)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def num(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def dist(d: dict, digits: int = 2) -> str:
    if not d or d.get("median") is None:
        return "n/a"
    return f"{d['median']:.{digits}f} (p10 {d['p10']:.{digits}f})"


def classification_table(result: dict, group: str) -> list[str]:
    lines = [
        "| model | clean UAR | masked UAR | noise-control UAR | clean acc | masked acc | "
        "noise acc | MI clean / masked / noise (bits) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, clean in result[group]["clean"].items():
        masked = result[group]["masked"][name]
        noise = result[group]["noise"][name]
        lines.append(
            f"| {name} | {pct(clean['uar'])} | {pct(masked['uar'])} | {pct(noise['uar'])} | "
            f"{pct(clean['accuracy'])} | {pct(masked['accuracy'])} | {pct(noise['accuracy'])} | "
            f"{num(clean['mi_bits'])} / {num(masked['mi_bits'])} / {num(noise['mi_bits'])} |"
        )
    return lines


def recall_table(result: dict, group: str) -> list[str]:
    classes = result["classes"]
    lines = [
        "| model | condition | " + " | ".join(classes) + " |",
        "|---|---|" + "---|" * len(classes),
    ]
    for name in result[group]["clean"]:
        for cond in ("clean", "masked", "noise"):
            rec = result[group][cond][name]["per_class_recall"]
            lines.append(
                f"| {name} | {cond} | " + " | ".join(pct(rec.get(c)) for c in classes) + " |"
            )
    return lines


def markdown(result: dict, command: str) -> str:
    m = result["masker"]
    chance = result["chance_uar"]
    lines = [
        f"# plainsight evaluate: {result['corpus']}",
        "",
        f"Command: `{command}`",
        "",
        f"- Clips: {result['clips']} from held-out test speakers {result['test_speakers']} "
        f"({result['selection']}), {result['audio_seconds']:.0f} s of audio.",
        f"- Masker: models {m['models']}, backend {m['backend']}, {m['threads']} thread(s), "
        f"method {m['method']}, steps {m['steps']}"
        + (f" (stream {m['stream_steps']})" if "stream_steps" in m else "")
        + (f", grid shift +-{m['grid_shift_ms']:g} ms" if m.get("grid_shift_ms") else "")
        + ", "
        + (f"eps {m['eps']}" if m.get("eps") is not None else f"SNR budget {m['snr_db']} dB")
        + f", objective {m['objective']}, envelope {m['envelope']}"
        + privacy_note(m)
        + ".",
        f"- Chance UAR: {pct(chance)} %. Masking real-time factor: {result['rtf']:.4f} "
        "(processing seconds per audio second, whole evaluation loop).",
        f"- Output lengths equal input lengths: {result['lengths_equal']}.",
        f"- Path: {path_line(result)}",
        f"- Listeners' window grid: {grid_line(result)}",
        f"- Listeners hear: {codec_line(result)}",
        "- Noise control: random +/-a sign noise with a = RMS of each clip's perturbation "
        "(the same SNR as the masked clip).",
        "",
        "## White-box (the model(s) whose gradient was used), % ",
        "",
        *classification_table(result, "whitebox"),
        *framing_table(result),
        "",
        "## Transfer to held-out models (never gave a gradient), %",
        "",
    ]
    bias = next(iter(result["whitebox"]["clean"].values()))["mi_bias_bits"]
    mi_note = (
        f"MI = plug-in mutual information between true and predicted label; its upward "
        f"bias at this clip count is about {bias:.2f} bits (Miller-Madow), so values near "
        "that mean no measurable leak."
    )
    if result["transfer"]["clean"]:
        lines += classification_table(result, "transfer")
        lines += ["", mi_note, "", "Per-class recall, %:", "", *recall_table(result, "transfer")]
    else:
        lines.append("No attacker models found (export/artifacts/<corpus>-attacker-*).")
    lines += adaptive_lines(result)
    q = result["quality"]
    lines += [
        "",
        "## Quality: median (10th percentile)",
        "",
        f"SNR on all clips; PESQ-wb and STOI on the first {q.get('pesq_stoi_clips', 'all')} "
        "(class-balanced) clips.",
        "",
        "| condition | SNR dB | PESQ-wb | STOI |",
        "|---|---|---|---|",
    ]
    for cond in ("masked", "noise"):
        lines.append(
            f"| {cond} | {dist(q[cond]['snr_db'], 1)} | {dist(q[cond].get('pesq_wb'))} | "
            f"{dist(q[cond].get('stoi'), 3)} |"
        )
    if q.get("dnsmos"):
        d = q["dnsmos"]
        lines += [
            "",
            f"DNSMOS (non-intrusive, speechmos), mean over the first {d['clean']['clips']} clips:",
            "",
            "| condition | SIG | BAK | OVRL | P.808 |",
            "|---|---|---|---|---|",
        ]
        for cond, s in d.items():
            cells = " | ".join(f"{s[k]['mean']:.2f}" for k in ("sig", "bak", "ovrl", "p808"))
            lines.append(f"| {cond} | {cells} |")
    if "asr" in result:
        a = result["asr"]
        lines += [
            "",
            f"## Speech-to-text (Whisper base, faster-whisper {a['compute_type']}, "
            f"language {a['language']}, {a['clips']} clips), WER %",
            "",
            "| clean | masked | noise control |",
            "|---|---|---|",
            f"| {pct(a['clean']['wer'])} | {pct(a['masked']['wer'])} | {pct(a['noise']['wer'])} |",
        ]
    lines += [
        "",
        "## Targets at this operating point",
        "",
        "| target | measured | ok |",
        "|---|---|---|",
    ]
    for name, t in result["targets"].items():
        extra = ""
        if "beats_noise_by" in t:
            extra = (
                f" (noise control {pct(t['noise_control_uar'])}, "
                f"masking beats it by {pct(t['beats_noise_by'])} pts)"
            )
        value = t["value"]
        shown = pct(value) if ("UAR" in name or "WER" in name) else num(value, 3)
        lines.append(f"| {name} | {shown}{extra} | {'yes' if t['ok'] else 'NO'} |")
    if "codec_curve" in result:
        lines += ["", *codec_curve_table(result)]
    if "curves" in result:
        lines += ["", *curve_tables(result)]
    lines += ["", f"Total time: {result['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def adaptive_lines(result: dict) -> list[str]:
    """Say which adaptive attackers were left out and why, and when none was scored."""
    if result.get("panel") not in ("final", "all"):
        return []
    lines = []
    roles = result["transfer_models"].values()
    if not any(str(role).startswith("adaptive") for role in roles):
        lines += [
            "",
            "No adaptive attacker fits this masker, so none was scored: how much hiding "
            "survives a model retrained on this masker's output is not measured here "
            "(`plainsight-train --role adaptive`, export/build_panel.sh).",
        ]
    left = result.get("adaptive_not_scored") or []
    if left:
        named = "; ".join(f"{e['member']}: {e['reason']}" for e in left)
        lines += ["", f"Adaptive attackers not scored beside this masker ({len(left)}): {named}."]
    return lines


def privacy_note(settings: dict) -> str:
    """', privacy tier neutralize (strength S)' when the masker neutralised first."""
    if settings.get("privacy", "mask") == "mask":
        return ""
    return f", privacy tier {settings['privacy']} (strength {settings['neutralize_strength']:g})"


def grid_line(result: dict) -> str:
    offset = result.get("listener_offset_ms") or 0
    if not offset:
        return "2 s windows, hop 1 s, from each clip's first sample (the masker's unshifted grid)."
    return f"starts {offset:g} ms into each clip (not the masker's)."


def framing_table(result: dict) -> list[str]:
    """The white-box model(s) on listener grids that start later than the evaluation's."""
    rows = result.get("framing") or []
    if not rows:
        return []
    lines = [
        "",
        "The same white-box model(s) heard by listeners whose window grid starts later "
        "(a cloud frames the audio its own way), UAR %:",
        "",
        "| model | listener grid | clean | masked | noise control |",
        "|---|---|---|---|---|",
    ]
    for name in result["whitebox"]["masked"]:
        for label, reps in [("evaluation's", result["whitebox"])] + [
            (f"+{row['offset_ms']:g} ms", row) for row in rows
        ]:
            cells = " | ".join(pct(reps[c][name]["uar"]) for c in ("clean", "masked", "noise"))
            lines.append(f"| {name} | {label} | {cells} |")
    return lines


def path_line(result: dict) -> str:
    if result.get("path", "mask") == "mask":
        return "mask (whole clip, Masker.mask)."
    st = result["stream"]
    return (
        f"stream (S16_LE PCM through StreamProcessor, hop {st['hop_ms']:g} ms, fed in "
        f"{st['chunk_samples']}-sample chunks; clean = {st['clean_reference']}; output "
        f"aligned with it by the stream's look-ahead, {st.get('output_aligned_by_ms', 0):g} ms)."
    )


def codec_line(result: dict) -> str:
    c = result.get("codec")
    if not c or c["codec"] == "none":
        return "the uncompressed output (no codec)."
    rates = ", ".join(f"{k} {num(v['kbps'], 1)}" for k, v in c["bitrate"].items())
    return (
        f"{c['codec']} round trip (libsndfile, compression level {c['compression_level']:.3f}; "
        f"measured kbit/s: {rates}). SNR/PESQ/STOI are measured before the codec."
    )


def kbps_cell(row: dict) -> str:
    if row["requested_kbps"] is None:
        return "PCM 256"
    return num(row["kbps"]["masked"], 1)


def codec_curve_table(result: dict) -> list[str]:
    """Hiding against bitrate: UAR % clean -> masked [noise control] per model and codec."""
    rows = result["codec_curve"]
    names = list(rows[0]["whitebox"]["clean"]) + list(rows[0]["transfer"]["clean"])
    lines = [
        "## Hiding vs uplink bitrate: UAR % clean -> masked [noise control], both after the codec",
        "",
        "| codec | measured kbit/s (masked) | " + " | ".join(names) + " | WER clean / masked |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for row in rows:
        cells = []
        for n in names:
            group = "whitebox" if n in row["whitebox"]["clean"] else "transfer"
            u = {cond: row[group][cond][n]["uar"] for cond in ("clean", "masked", "noise")}
            cells.append(f"{pct(u['clean'])} -> {pct(u['masked'])} [{pct(u['noise'])}]")
        wer = "n/a"
        if "asr" in row:
            wer = f"{pct(row['asr']['clean'])} / {pct(row['asr']['masked'])} ({row['asr_clips']})"
        lines.append(f"| {row['codec']} | {kbps_cell(row)} | " + " | ".join(cells) + f" | {wer} |")
    return lines


def curve_tables(result: dict) -> list[str]:
    c = result["curves"]
    names = list(c["budget"][0]["whitebox"]) + list(c["budget"][0]["transfer"])
    lines = []
    if c["steps"]:
        lines += ["## Accuracy vs steps (operating-point budget), UAR %", ""]
        lines += ["| steps | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for row in c["steps"]:
            vals = row["whitebox"] | row["transfer"]
            cells = " | ".join(pct(vals[n]["uar"]) for n in names)
            lines.append(f"| {row['steps']} | {cells} |")
        lines.append("")
    lines += [
        "## Budget sweep (SNR setting), UAR % masked [noise control]",
        "",
        "| SNR setting | median SNR | PESQ-wb | STOI | WER (clean) | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for row in c["budget"]:
        cells = []
        for n in names:
            masked = (row["whitebox"] | row["transfer"])[n]["uar"]
            noise = (row["noise_whitebox"] | row["noise_transfer"])[n]["uar"]
            cells.append(f"{pct(masked)} [{pct(noise)}]")
        wer = f"{pct(row.get('wer'))} ({pct(row.get('wer_clean'))})"
        lines.append(
            f"| {row['snr_db_setting']:g} | {num(row['median_snr_db'], 1)} | "
            f"{num(row['median_pesq_wb'])} | {num(row['median_stoi'], 3)} | {wer} | "
            + " | ".join(cells)
            + " |"
        )
    return lines + ["", *reach_table(result)]


def _crossing(snrs: list, margins: list) -> float | None:
    """Measured SNR (dB) where a margin (<= 0 passes) first passes, walking from the weakest
    budget to the strongest, linearly interpolated between the last failing and first passing
    point."""
    for i, m1 in enumerate(margins):
        if m1 <= 0:
            if i == 0:
                return snrs[0]
            s0, s1, m0 = snrs[i - 1], snrs[i], margins[i - 1]
            return s0 + (s1 - s0) * m0 / (m0 - m1)
    return None


def budget_reach(result: dict) -> dict:
    """Per transfer member: the measured SNR at which its masked UAR reaches chance + 10
    points, and at which it is 15 points below its same-SNR noise control (issue 9 §3)."""
    from plainsight.evaluate.run import TARGETS

    rows = sorted(result["curves"]["budget"], key=lambda r: -r["median_snr_db"])
    snrs = [r["median_snr_db"] for r in rows]
    pesqs = [r["median_pesq_wb"] for r in rows]
    limit = result["chance_uar"] + TARGETS["attacker_uar_over_chance"]
    out = {}
    for name in rows[0]["transfer"]:
        masked = [r["transfer"][name]["uar"] for r in rows]
        noise = [r["noise_transfer"][name]["uar"] for r in rows]
        gap = [n - m for m, n in zip(masked, noise, strict=True)]
        over = [m - limit for m in masked]  # <= 0 passes
        below = [TARGETS["attacker_below_noise"] - g for g in gap]  # <= 0 passes
        both = [max(a, b) for a, b in zip(over, below, strict=True)]
        entry = {"limit": limit, "weakest_snr_db": snrs[0], "strongest_snr_db": snrs[-1]}
        for key, margin in (("chance10", over), ("below_noise15", below), ("both", both)):
            snr = _crossing(snrs, margin)
            entry[f"{key}_snr_db"] = snr
            if snr is not None:
                entry[f"{key}_pesq_wb"] = float(np.interp(-snr, [-s for s in snrs], pesqs))
        entry["min_uar"] = min(masked)
        entry["min_uar_snr_db"] = snrs[int(np.argmin(masked))]
        out[name] = entry
    return out


def reach_table(result: dict) -> list[str]:
    reach = budget_reach(result)
    if not reach:
        return []
    lowest = num(next(iter(reach.values()))["strongest_snr_db"], 1)
    lines = [
        "## Budget each held-out model needs (measured median SNR dB, PESQ-wb there)",
        "",
        "Interpolated between budget points; '-' = not reached down to the strongest budget "
        f"({lowest} dB). ok = both at once (issue 9 §3).",
        "",
        "| model | UAR <= chance + 10 | >= 15 below noise control | ok | lowest UAR (at SNR) |",
        "|---|---|---|---|---|",
    ]

    def cell(entry, key):
        snr = entry[f"{key}_snr_db"]
        return "-" if snr is None else f"{snr:.1f} dB (PESQ {entry[f'{key}_pesq_wb']:.2f})"

    for name, e in reach.items():
        lines.append(
            f"| {name} | {cell(e, 'chance10')} | {cell(e, 'below_noise15')} | {cell(e, 'both')} "
            f"| {pct(e['min_uar'])} ({e['min_uar_snr_db']:.1f} dB) |"
        )
    return lines


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def codec_plot(result: dict, out: Path) -> list[Path]:
    """hiding_vs_bitrate.png: masked (solid) and clean (dotted) UAR of every model."""
    if "codec_curve" not in result:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["codec_curve"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['codec']}\n{kbps_cell(r)} kbit/s" for r in rows]
    x = list(range(len(rows)))
    for group in ("whitebox", "transfer"):
        for name in rows[0][group]["clean"]:
            (line,) = ax.plot(
                x, [100 * r[group]["masked"][name]["uar"] for r in rows], "-o", label=name
            )
            ax.plot(
                x,
                [100 * r[group]["clean"][name]["uar"] for r in rows],
                ":",
                color=line.get_color(),
            )
    ax.axhline(100 * result["chance_uar"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("UAR % (solid masked, dotted clean)")
    ax.set_title(f"{result['corpus']}, {result.get('path', 'mask')}: hiding vs uplink codec")
    ax.legend(fontsize=6)
    return [save_figure(fig, out / "hiding_vs_bitrate.png")]


def plots(result: dict, out: Path) -> list[Path]:
    """accuracy_vs_steps.png, accuracy_vs_budget.png, wer_vs_budget.png (if curves ran),
    hiding_vs_bitrate.png (if several codecs ran)."""
    written = codec_plot(result, out)
    if "curves" not in result:
        return written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["curves"]
    chance = result["chance_uar"]

    def save(fig, name):
        written.append(save_figure(fig, out / name))

    if c["steps"]:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        steps = [r["steps"] for r in c["steps"]]
        for group, style in (("whitebox", "-o"), ("transfer", "--s")):
            for name in c["steps"][0][group]:
                ax.plot(
                    steps,
                    [100 * r[group][name]["accuracy"] for r in c["steps"]],
                    style,
                    label=f"{name} ({group})",
                )
        ax.axhline(100 * chance, color="grey", lw=0.8, ls=":", label="chance UAR")
        ax.set_xlabel(f"{c['steps'][0]['method']} steps")
        ax.set_ylabel("accuracy %")
        snr_db = result["masker"].get("snr_db")
        ax.set_title(f"{result['corpus']}: accuracy vs steps at {snr_db} dB")
        ax.legend(fontsize=7)
        save(fig, "accuracy_vs_steps.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    snr = [r["median_snr_db"] for r in c["budget"]]  # measured, not the setting
    for ax, group in zip(axes, ("whitebox", "transfer"), strict=True):
        for name in c["budget"][0][group]:
            (line,) = ax.plot(
                snr,
                [100 * r[group][name]["uar"] for r in c["budget"]],
                "-o",
                label=f"{name} masked",
            )
            ax.plot(
                snr,
                [100 * r[f"noise_{group}"][name]["uar"] for r in c["budget"]],
                ":",
                color=line.get_color(),
                label=f"{name} noise control",
            )
        ref = result.get("spectrogram_reference")
        if ref and group == "whitebox":
            ax.plot(
                [r["snr_db"] for r in ref["rows"]],
                [100 * r["uar"] for r in ref["rows"]],
                "k--^",
                label="log-mel FGSM (reference)",
            )
        ax.axhline(100 * chance, color="grey", lw=0.8, ls="--", label="chance")
        ax.invert_xaxis()
        ax.set_xlabel("median measured SNR (dB), stronger to the right")
        ax.set_title(f"{group} UAR")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("UAR %")
    save(fig, "accuracy_vs_budget.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    if any("wer" in r for r in c["budget"]):
        ax.plot(snr, [100 * r["wer"] for r in c["budget"]], "-o", label="WER masked")
        ax.axhline(100 * c["budget"][0]["wer_clean"], color="grey", ls="--", label="WER clean")
    ax2 = ax.twinx()
    ax2.plot(snr, [r["median_pesq_wb"] for r in c["budget"]], "-s", color="C2", label="PESQ-wb")
    ax2.set_ylabel("median PESQ-wb")
    ax.invert_xaxis()
    ax.set_xlabel("median measured SNR (dB)")
    ax.set_ylabel("WER %")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{result['corpus']}: speech-to-text and quality vs budget")
    if ax.get_lines():
        ax.legend(loc="center left", fontsize=7)
    ax2.legend(loc="lower left", fontsize=7)
    save(fig, "wer_vs_budget.png")
    return written


def write_all(result: dict, out: Path, command: str, stem: str = "evaluate") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", result)
    atomic_write_bytes(out / f"{stem}.md", markdown(result, command).encode())
    return [out / f"{stem}.json", out / f"{stem}.md", *plots(result, out)]


def condition_name(result: dict) -> str:
    """'emodb', or 'emodb stream + opus:24' off the default path and codec."""
    name = result["corpus"]
    path = result.get("path", "mask")
    codec = result.get("codec", {}).get("codec", "none")
    if path != "mask" or codec != "none":
        name += f" {path}" + (f" + {codec}" if codec != "none" else "")
    return name


def summary_table(results: list[dict]) -> str:
    """One README table over several evaluate.json results (e.g. both corpora)."""
    lines = [
        "| corpus | model (role) | clean UAR | masked UAR | noise-control UAR | "
        "masked minus clean | masked beats noise by | MI masked (bits) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for group, role in (("whitebox", "white-box"), ("transfer", None)):
            for name, clean in r[group]["clean"].items():
                masked = r[group]["masked"][name]
                noise = r[group]["noise"][name]
                who = role or r["transfer_models"].get(name, "transfer")
                lines.append(
                    f"| {condition_name(r)} (chance {pct(r['chance_uar'])}) | {name} ({who}) | "
                    f"{pct(clean['uar'])} | {pct(masked['uar'])} | {pct(noise['uar'])} | "
                    f"{pct(masked['uar'] - clean['uar'])} | "
                    f"{pct(noise['uar'] - masked['uar'])} | {num(masked['mi_bits'])} |"
                )
    lines += [
        "",
        "| corpus | WER clean | WER masked | WER noise | median SNR dB (p10) | "
        "PESQ-wb (p10) | STOI (p10) | masking RTF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r.get("asr")
        q = r["quality"]["masked"]
        wers = (
            [pct(a["clean"]["wer"]), pct(a["masked"]["wer"]), pct(a["noise"]["wer"])]
            if a
            else ["n/a"] * 3
        )
        lines.append(
            f"| {condition_name(r)} | " + " | ".join(wers) + f" | {dist(q['snr_db'], 1)} | "
            f"{dist(q.get('pesq_wb'))} | {dist(q.get('stoi'), 3)} | {r['rtf']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _codec_point(result: dict, codec: str) -> dict | None:
    return next((r for r in result.get("codec_curve", []) if r["codec"] == codec), None)


def live_path_table(results: list[dict], codec: str = "opus:24") -> str:
    """Mask vs stream vs stream + codec, per corpus, from `--path mask` and `--path stream`
    results whose --codec list includes `codec` (UAR %; after the codec, clean -> masked)."""
    by = {(r["corpus"], r.get("path", "mask")): r for r in results}
    lines = [
        f"| corpus | model (role) | clean UAR | mask | stream | {codec}: clean -> mask | "
        f"{codec}: clean -> stream | stream noise control |",
        "|---|---|---|---|---|---|---|---|",
    ]
    quality = [
        "| corpus | path | WER clean / masked / noise (clips) | median SNR dB (p10) | "
        "PESQ-wb (p10) | STOI (p10) | masking RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    for corpus in dict.fromkeys(r["corpus"] for r in results):
        mask, stream = by.get((corpus, "mask")), by.get((corpus, "stream"))
        if mask is None or stream is None:
            continue
        mask_c, stream_c = _codec_point(mask, codec), _codec_point(stream, codec)
        for group, role in (("whitebox", "white-box"), ("transfer", None)):
            for name, clean in mask[group]["clean"].items():
                who = role or mask["transfer_models"].get(name, "transfer")

                def after(point, name=name, group=group):
                    if point is None or name not in point[group]["clean"]:
                        return "n/a"
                    u = point[group]
                    return f"{pct(u['clean'][name]['uar'])} -> {pct(u['masked'][name]['uar'])}"

                def uar(r, cond, name=name, group=group):
                    rep = r[group][cond].get(name)  # a panel member may be in one run only
                    return pct(rep["uar"]) if rep else "n/a"

                lines.append(
                    f"| {corpus} (chance {pct(mask['chance_uar'])}) | {name} ({who}) | "
                    f"{pct(clean['uar'])} | {uar(mask, 'masked')} | {uar(stream, 'masked')} | "
                    f"{after(mask_c)} | {after(stream_c)} | {uar(stream, 'noise')} |"
                )
        for label, r, point in (
            ("mask", mask, None),
            ("stream", stream, None),
            (f"stream + {codec}", stream, stream_c),
        ):
            q = r["quality"]["masked"]
            if point is None:
                a = r.get("asr")
                wer = (
                    f"{pct(a['clean']['wer'])} / {pct(a['masked']['wer'])} / "
                    f"{pct(a['noise']['wer'])} ({a['clips']})"
                    if a
                    else "n/a"
                )
            else:
                wer = (
                    f"{pct(point['asr']['clean'])} / {pct(point['asr']['masked'])} / n/a "
                    f"({point['asr_clips']})"
                    if "asr" in point
                    else "n/a"
                )
            quality.append(
                f"| {corpus} | {label} | {wer} | {dist(q['snr_db'], 1)} | "
                f"{dist(q.get('pesq_wb'))} | {dist(q.get('stoi'), 3)} | {r['rtf']:.4f} |"
            )
    return "\n".join(lines + [""] + quality) + "\n"


def run_label(result: dict) -> str:
    """'mask', 'stream', 'stream + opus:24': how the listeners received the clips."""
    codec = result.get("codec", {}).get("codec", "none")
    return result.get("path", "mask") + (f" + {codec}" if codec != "none" else "")


def panel_verdict(result: dict, name: str) -> str:
    """Issue 9 section 3 for one attacker of one run: 'yes', 'NO (...)' or '-' (no target)."""
    target = next(
        (t for k, t in result["targets"].items() if k.startswith(f"attacker {name} ")), None
    )
    if target is None:
        return "-"
    if target["ok"]:
        return "yes"
    why = []
    if target["value"] > target["limit"] + 1e-12:
        why.append(f"{pct(target['value'] - target['limit'])} over chance + 10")
    below = target["beats_noise_by"]
    if below < 0.15:
        why.append(f"only {pct(below)} below noise" if below >= 0 else f"{pct(-below)} above noise")
    return "NO (" + "; ".join(why) + ")"


def panel_table(results: list[dict]) -> str:
    """`--panel` runs of one or more paths/codecs side by side, per corpus: UAR % 'clean ->
    masked [same-SNR noise control]' (all as the listener heard them), and the issue 9
    verdict (<= chance + 10 and >= 15 below the noise control) per run."""
    corpora = list(dict.fromkeys(r["corpus"] for r in results))
    lines = []
    for corpus in corpora:
        runs = [r for r in results if r["corpus"] == corpus]
        labels = [run_label(r) for r in runs]
        lines += [
            f"{corpus} (chance {pct(runs[0]['chance_uar'])}), UAR %, clean -> masked "
            "[noise control]; ok = issue 9 target met:",
            "",
            "| model (role) | " + " | ".join(f"{lab} | ok ({lab})" for lab in labels) + " |",
            "|---|" + "---|---|" * len(runs),
        ]
        names = {}
        for r in runs:
            for group in ("whitebox", "transfer"):
                for name in r[group]["clean"]:
                    who = "white-box" if group == "whitebox" else r["transfer_models"][name]
                    names.setdefault(name, (group, who))
        for name, (group, who) in names.items():
            cells = []
            for r in runs:
                rep = {c: r[group][c].get(name) for c in ("clean", "masked", "noise")}
                if rep["clean"] is None:
                    cells += ["n/a", "n/a"]
                    continue
                cells.append(
                    f"{pct(rep['clean']['uar'])} -> {pct(rep['masked']['uar'])} "
                    f"[{pct(rep['noise']['uar'])}]"
                )
                if group == "whitebox":
                    t = r["targets"].get(f"whitebox {name} UAR within chance +/- 3 pts")
                    cells.append("-" if t is None else ("yes" if t["ok"] else "NO"))
                else:
                    cells.append(panel_verdict(r, name))
            lines.append(f"| {name} ({who}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
