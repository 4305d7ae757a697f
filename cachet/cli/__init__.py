"""The ``cachet`` command line."""
