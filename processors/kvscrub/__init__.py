"""processors/kvscrub."""
