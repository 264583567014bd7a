"""Voice channel (Twilio Voice, 3CX over SIP, STT/TTS). Arrives with the voice issue."""
