"""A PostgreSQL connection string as libpq reads it, and as it may be shown: host, port, database and user, never
the password.

libpq takes a URL (`postgresql://user:password@host:port/db?param=value`) or keyword/value pairs (`host=h
password=p`); a password can hide in the URL's userinfo, in a `password=` parameter of either form, or in the text
of the driver's own errors. Everything vl2v prints about the ledger goes through `describe`, and every driver
error through `scrub`.

A URL's userinfo may hold any character. libpq ends it at the first `@` (so `bob:p@ss@host` connects to host
`ss@host`, and printing that host prints part of the password); here it ends at the last `@` before the host,
and is percent-encoded before libpq sees it, so the password is the one the user wrote.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote

SCHEMES = ("postgresql://", "postgres://")
HIDDEN = "***"
_KEYWORD_VALUE = re.compile(r"^\s*[A-Za-z_]+\s*=")


def is_postgres(url: str) -> bool:
    """Whether libpq would read `url` as a PostgreSQL connection string (a URL or keyword/value pairs)."""
    return url.startswith(SCHEMES) or bool(_KEYWORD_VALUE.match(url))


def normalized(url: str) -> str:
    """`url` with its userinfo percent-encoded (the part before the last `@` that precedes the host), so libpq reads
    the user and password as written; keyword/value strings unchanged."""
    scheme = next((s for s in SCHEMES if url.startswith(s)), None)
    if scheme is None:
        return url
    rest = url[len(scheme) :]
    at = _userinfo_end(rest)
    if at < 0:
        return url
    user, colon, password = rest[:at].partition(":")
    userinfo = _encoded(user) + (":" + _encoded(password) if colon else "")
    return f"{scheme}{userinfo}@{rest[at + 1 :]}"


def parts(url: str) -> dict[str, str] | None:
    """What libpq reads in `url` (None when it cannot read it, or psycopg is not installed)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return None
    try:
        return {k: str(v) for k, v in conninfo_to_dict(normalized(url)).items() if v is not None}
    except Exception:  # psycopg.ProgrammingError: its message quotes pieces of the string
        return None


def describe(url: str) -> str:
    """The database `url` names, as it may be logged: `postgresql://user@host:port/database`, nothing else."""
    if not is_postgres(url):
        return "an unrecognised database URL (not shown: it may hold a password)"
    found = parts(url)
    if found is None:
        return "a PostgreSQL connection string that cannot be parsed (not shown: it may hold a password)"
    user = f"{found['user']}@" if found.get("user") else ""
    port = f":{found['port']}" if found.get("port") else ""
    return f"postgresql://{user}{found.get('host', '')}{port}/{found.get('dbname', '')}"


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error, say) with the URL and every form of its password replaced by `***`."""
    secrets = {url, normalized(url)}
    found = parts(url)
    if found and found.get("password"):
        password = found["password"]
        secrets |= {password, quote(password, safe=""), quote(password), quote_plus(password)}
        # Pieces too, should a message quote part of it (a driver's parser stops at a space or a quote).
        secrets |= {piece for piece in re.split(r"[^A-Za-z0-9]+", password) if len(piece) >= 4}
    if url.startswith(SCHEMES):
        rest = url.split("://", 1)[1]
        secrets.add(rest[: max(_userinfo_end(rest), 0)].partition(":")[2])
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of a URL (the text after its scheme) ends: the last `@` before the query parameters
    (`?name=`); -1 if there is none. A password may hold `:`, `/`, `?` and `@`."""
    query = re.search(r"\?[A-Za-z_]+=", rest)
    return rest.rfind("@", 0, query.start() if query else len(rest))


def _encoded(value: str) -> str:
    return quote(unquote(value), safe="")
