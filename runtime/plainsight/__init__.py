"""plainsight: an on-device privacy filter that hides emotion in speech.

The runtime needs numpy, soundfile and one inference backend. It never imports torch.
"""

__version__ = "0.1.0"

from plainsight.features import FeatureConfig, log_mel  # noqa: E402

__all__ = ["FeatureConfig", "Masker", "log_mel", "__version__"]


def __getattr__(name):
    # Lazy, so `import plainsight` stays cheap and loads no backend.
    if name == "Masker":
        from plainsight.masker import Masker

        return Masker
    raise AttributeError(f"module 'plainsight' has no attribute {name!r}")
