"""`from spotrun.hf import SpotrunCallback, resume_checkpoint`: a Transformers Trainer that survives reclaims."""

from spotrun.sdk.hf_callback import SpotrunCallback, is_complete, resume_checkpoint

__all__ = ["SpotrunCallback", "is_complete", "resume_checkpoint"]
