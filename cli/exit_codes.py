"""Documented exit codes of every `vl2v` command (README, "Exit codes")."""

OK = 0
ERROR = 1  # a clear one-line error: bad option value, missing file, model that cannot load
USAGE = 2  # unknown command or flag (typer/click)
INTERRUPTED = 130  # Ctrl-C, after a clean shutdown
