"""Build side of plainsight (torch): front end, models, training, export."""

__version__ = "0.1.0"
