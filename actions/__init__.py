"""Custom actions of the assistant (rasa-sdk). Entry point: ``python -m rasa_sdk --actions actions``."""
