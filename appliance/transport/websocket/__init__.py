"""The live WebSocket door: Deepgram's streaming dialect (/v1/listen) and the captions page (docs/websocket.md)."""
