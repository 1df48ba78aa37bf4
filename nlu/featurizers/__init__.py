"""Dense featurizers (one per file)."""
