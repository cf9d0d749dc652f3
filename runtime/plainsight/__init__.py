"""plainsight: an on-device privacy filter that hides emotion in speech.

The runtime needs numpy, soundfile and one inference backend. It never imports torch.
"""

__version__ = "0.1.0"

from plainsight.features import FeatureConfig, log_mel  # noqa: E402

__all__ = ["FeatureConfig", "log_mel", "__version__"]
