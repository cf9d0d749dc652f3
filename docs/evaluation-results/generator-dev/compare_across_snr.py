"""Paired bootstrap of two methods' cached clips crafted at different measured SNRs (to
compare them at about equal PESQ): `transfer-study --compare` reads one SNR's cache only.

    python docs/evaluation-results/generator-dev/compare_across_snr.py emodb 56 \
        gain-16x100@10 gen-gain-16x100-6k@8 docs/evaluation-results/generator-dev

B minus A, dev-panel UAR points, 95 % interval over resampled clips (seed 0).
"""

import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from plainsight_export import transfer_study as T

CACHE = Path("eval-out/transfer-study-cache")


def main(corpus: str, limit: str, a: str, b: str, out: str) -> None:
    names = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (a, b):
            method, snr = spec.split("@")
            name = f"{method}-snr{snr}"
            source = CACHE / f"{corpus}-n{limit}-b35-s{snr}-seed0" / f"{method}.npz"
            shutil.copy(source, Path(tmp) / f"{name}.npz")
            names.append(name)
        args = SimpleNamespace(
            data=T.os.environ["PLAINSIGHT_DATA"],
            corpus=corpus,
            limit=int(limit),
            cache=Path(tmp),
            compare=names,
            seed=0,
            snr_db=float("nan"),  # each clip at its own method's SNR (in the names)
            out=Path(out),
        )
        T.compare_cached(args)
    md = Path(out) / f"compare-{names[0]}-vs-{names[1]}.md"
    md.write_text(md.read_text().replace(" at nan dB", " (each at the SNR in its name)", 1))


if __name__ == "__main__":
    main(*sys.argv[1:])
