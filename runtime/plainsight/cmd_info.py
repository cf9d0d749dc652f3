"""Installed models, backends, versions and manifest hashes."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also hash and load every model file; exit 1 on a mismatch",
    )


def collect(verify: bool = False) -> dict:
    import platform

    import numpy
    import soundfile

    from plainsight import __version__
    from plainsight.backends import BackendError, backend_version, installed_backends, load_graph
    from plainsight.manifest import (
        BUNDLED_DIR,
        DEFAULT_CORPUS,
        ManifestError,
        bundled_models,
        verify_file,
    )

    models = []
    for spec in bundled_models():
        entry = {
            "name": spec.name,
            "directory": str(spec.directory),
            "corpus": spec.corpus,
            "version": spec.manifest.get("version"),
            "role": spec.manifest.get("role"),
            "classes": list(spec.classes),
            "window_samples": spec.window_samples,
            "sample_rate": spec.sample_rate,
            "metrics": spec.manifest.get("metrics", {}),
            "files": {},
        }
        for fname, meta in spec.files.items():
            item = {k: meta.get(k) for k in ("graph", "backend", "sha256", "bytes")}
            if verify:
                try:
                    verify_file(spec, fname)
                    if meta.get("backend") in installed_backends():  # classes/window vs graph
                        load_graph(spec, meta["graph"], meta["backend"])
                    item["verified"] = True
                except (ManifestError, BackendError) as exc:
                    item["verified"] = False
                    item["error"] = str(exc)
            entry["files"][fname] = item
        models.append(entry)
    return {
        "plainsight": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "backends": {name: backend_version(name) for name in installed_backends()},
        "default_model": f"{DEFAULT_CORPUS}-compact",
        "models_dir": str(BUNDLED_DIR),
        "models": models,
    }


def run(args) -> int:
    import sys

    info = collect(args.verify)
    failed = [
        f["error"]
        for m in info["models"]
        for f in m["files"].values()
        if f.get("verified") is False
    ]
    for error in failed:  # one line per file that does not match its manifest
        print(f"plainsight info: {error}", file=sys.stderr)
    status = 1 if failed else 0
    if args.json:
        print(json.dumps(info, indent=1))
        return status
    print(f"plainsight {info['plainsight']} (python {info['python']}, {info['platform']})")
    print(f"numpy {info['numpy']}, soundfile {info['soundfile']}, libsndfile {info['libsndfile']}")
    backends = ", ".join(f"{k} ({v})" for k, v in info["backends"].items()) or "none"
    print(f"backends: {backends}")
    print(f"default model: {info['default_model']}")
    if not info["models"]:
        print(f"no bundled models in {info['models_dir']}")
    for m in info["models"]:
        uar = m["metrics"].get("uar")
        print(
            f"model {m['name']} v{m['version']} ({m['corpus']}, {len(m['classes'])} classes, "
            f"UAR {uar if uar is not None else '?'}): {', '.join(m['classes'])}"
        )
        for fname, f in m["files"].items():
            check = {True: " ok", False: " MISMATCH"}.get(f.get("verified"), "")
            print(
                f"  {fname:16s} {f['graph']:8s} {f['backend']:6s} sha256 {f['sha256'][:16]}{check}"
            )
    return status
