"""cachet."""
