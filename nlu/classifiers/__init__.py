"""Intent classifiers (one per file)."""
