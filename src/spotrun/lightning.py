"""`from spotrun.lightning import SpotrunCallback, resume_path`: Lightning that survives reclaims."""

from spotrun.sdk.lightning_callback import SpotrunCallback, resume_path

__all__ = ["SpotrunCallback", "resume_path"]
