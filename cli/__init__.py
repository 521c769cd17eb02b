"""The `vl2v` command line."""
