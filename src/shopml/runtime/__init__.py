"""What a registered model needs at prediction time, and nothing more (no training libraries)."""
