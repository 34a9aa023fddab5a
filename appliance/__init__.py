"""Speech-to-text edge appliance: streaming Whisper transcription over gRPC."""

__version__ = "0.1.0"
