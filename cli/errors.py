"""How the `nhr` command fails: one or two plain lines and a non-zero exit, not a traceback.

An expected failure (the database unreachable, a role or database missing, settings refused, a
file missing or unreadable) is explained in words with what to do next; anything else names the
exception type only. `--debug` (anywhere on the command line) or `NHR_DEBUG=1` shows the full
traceback instead. Nothing printed here contains a submitted or stored value: database URLs are
shown without their password, and driver messages are matched, never echoed.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable

from rich.console import Console

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _database_url() -> str:
    try:
        from registry.settings import get_settings

        return safe_url(get_settings().database_url)
    except Exception:  # noqa: BLE001 - settings themselves may be what failed
        return "the configured database (NHR_DATABASE_URL)"


def _operational(exc: BaseException) -> tuple[str, str]:
    text = str(getattr(exc, "orig", None) or exc)
    url = _database_url()
    if m := re.search(r'role "([^"]+)" does not exist', text):
        return (f"the database role {m.group(1)!r} does not exist on {url}",
                f"create it first, e.g. `createuser --pwprompt {m.group(1)}` as the postgres superuser (docs/operators.md)")
    if m := re.search(r'database "([^"]+)" does not exist', text):
        return (f"the database {m.group(1)!r} does not exist on {url}",
                f"create it first, e.g. `createdb --owner <role> {m.group(1)}` (docs/operators.md)")
    if "password authentication failed" in text:
        return f"the database refused the password for {url}", "check the password in NHR_DATABASE_URL"
    if url.startswith("sqlite"):
        return (f"cannot open the SQLite database {url}",
                "run `nhr init` (or `python3 dev.py demo`) first, and check that its folder exists and is writable")
    return (f"cannot reach the database at {url}",
            "check that the server is running and that NHR_DATABASE_URL is right; `--debug` shows the driver's message")


def _validation(exc: BaseException) -> tuple[str, str]:
    errors = getattr(exc, "errors", lambda: [])()
    prefix = "NHR_"
    try:
        from registry import settings as settings_module

        model = getattr(settings_module, getattr(exc, "title", ""), None)
        prefix = (getattr(model, "model_config", None) or {}).get("env_prefix") or prefix
    except Exception:  # noqa: BLE001
        pass
    names = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "__root__")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        names.append(f"{prefix}{loc.upper()}: {msg}" if loc else msg)
    return "settings refused: " + ("; ".join(names) or "invalid value"), "see docs/configuration.md"


def explain(exc: BaseException) -> tuple[str, str | None]:
    """(what is wrong, what to do) for an exception the command did not handle itself."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, OperationalError

    handlers: list[tuple[type | tuple[type, ...], Callable[[BaseException], tuple[str, str | None]]]] = [
        (OperationalError, _operational),
        (ValidationError, _validation),
        (ArgumentError, lambda e: (f"NHR_DATABASE_URL is not a database URL ({_database_url()})",
                                   "use postgresql://user:password@host:5432/name or sqlite:///path/to/file.sqlite3")),
        (FileNotFoundError, lambda e: (f"file not found: {getattr(e, 'filename', None) or 'a file the command needs'}",
                                       "check the path (relative paths are taken from the current directory)")),
        (PermissionError, lambda e: (f"permission denied: {getattr(e, 'filename', None) or 'a file the command needs'}",
                                     "check the file's owner and mode")),
        (IsADirectoryError, lambda e: (f"expected a file, found a folder: {getattr(e, 'filename', '')}", None)),
    ]
    for kind, handler in handlers:
        if isinstance(exc, kind):
            return handler(exc)
    if isinstance(exc, ValueError) and "production" in str(exc):
        return f"settings refused: {exc}", "see docs/configuration.md"
    return f"unexpected error ({type(exc).__name__})", "run the same command with --debug for the traceback"


def run(app, argv: list[str] | None = None) -> int:
    """Run the typer `app` with NHR's failure handling; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("NHR_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="nhr", standalone_mode=True)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the point of this module
        if debug:
            raise
        what, todo = explain(exc)
        _err.print(f"[red]error[/]: {what}")
        if todo:
            _err.print(f"  {todo}")
        return 1
    return 0
