"""Phone calls: Twilio Voice (and 3CX through a SIP trunk to a Twilio SIP Domain), our own
speech pipeline over Media Streams, turn-based <Gather> as the fallback. docs/VOICE.md.

- `twilio.py`: webhooks, the Media Streams WebSocket, TwiML, call records and transfers.
- `session.py`: one call's pipeline (endpointing, STT, orchestrator, TTS, barge-in, keypad).
- `engines.py`: speech-to-text and text-to-speech engines behind two small interfaces.
- `vad.py`, `audio.py`: voice activity detection; μ-law, resampling and frames at the edge.
"""
