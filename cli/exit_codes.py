"""Documented exit codes of every `vl2v` command (README, "Exit codes")."""

OK = 0
ERROR = 1  # a clear one-line error: bad option value, missing file or folder, cache mismatch, cache not whole
USAGE = 2  # unknown command or flag (typer/click)
QUOTA_EXHAUSTED = 3  # the vendor's balance ran out (402); everything paid so far is saved
VENDOR_UNREACHABLE = 4  # connection errors, timeouts, 429 or 5xx outlasted the retries; partial result saved
AUTH_FAILED = 5  # the vendor refused the API key (401); partial result saved
INTERRUPTED = 130  # Ctrl-C, after a clean save
