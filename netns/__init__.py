"""burrow's network engine: Netavark-compatible planning and apply, usable in any netns."""

__version__ = "0.1.0"
