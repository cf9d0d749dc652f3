"""python -m plainsight_export train ... | spectrogram-reference ... | <export subcommand> ..."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from plainsight_export.train import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "spectrogram-reference":
        from plainsight_export.spectrogram_reference import main as reference_main

        return reference_main(argv[1:])
    if argv and argv[0] == "transfer-study":
        from plainsight_export.transfer_study import main as study_main

        return study_main(argv[1:])
    if argv and argv[0] == "robust-surrogate":
        from plainsight_export.robust_surrogate import main as robust_main

        return robust_main(argv[1:])
    try:
        from plainsight_export.cli import main as cli_main
    except ImportError as exc:
        print(f"plainsight_export: export commands unavailable ({exc})", file=sys.stderr)
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
