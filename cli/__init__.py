"""The `scanq` command line."""
