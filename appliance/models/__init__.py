"""Whisper models: where the weights come from (store), and the backends that run them."""
