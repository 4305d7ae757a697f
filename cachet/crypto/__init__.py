"""cachet/crypto."""
