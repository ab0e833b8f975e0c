"""A local stand-in for the OpenAI, Anthropic and Gemini batch APIs.

The official SDKs run against it unchanged (point their base URL at it); it answers
deterministically, drives batches through their lifecycle by time and injects the faults the
connector must survive. See ``EmulatorConfig`` for the knobs.
"""

from .config import EmulatorConfig, HttpFault
from .runner import EmulatorThread, run_emulator
from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "EmulatorThread", "HttpFault", "run_emulator"]
