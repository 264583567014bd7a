"""Custom Rasa SDK actions for the clinic assistant (see ``actions.py``)."""
