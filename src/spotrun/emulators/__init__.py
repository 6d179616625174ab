"""Local, faithful emulators of each cloud's spot notice endpoint, one module per cloud.

Used by the local provider, by tests, and by users testing their own handlers
(`spotrun emulate aws --notice-in 30s`). `base` documents the control API they all serve.
"""

from __future__ import annotations

from spotrun.emulators.base import Emulator, EmulatorThread

__all__ = ["Emulator", "EmulatorThread"]
