"""Rasa input channels of our own, loaded by the Rasa server (rasa environment) from credentials.yml."""
