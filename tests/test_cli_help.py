"""Every `nhr` option and argument says what it is for, and every optional one says its default
(issue 15): Typer's `[default: ...]`, or, where the default is computed (a setting, the caller's
scope, a file next to another), the help text saying so. The test walks the whole Typer app, so a
new command is checked the day it is added."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.main import get_command

from cli import progress
from cli.main import app


def _commands(group, path: tuple[str, ...] = ()):
    """(path, command) of every leaf command (Typer carries its own copy of click: duck typing)."""
    if hasattr(group, "commands"):
        for name, cmd in group.commands.items():
            yield from _commands(cmd, (*path, name))
    else:
        yield path, group


COMMANDS = sorted(_commands(get_command(app)), key=lambda pc: pc[0])


def _is_option(param) -> bool:
    return param.param_type_name == "option"


def _params(command):
    return [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]


def test_the_walk_finds_the_commands():
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"init", "serve", "worker", "demo", "import", "backup", "restore", "jurisdictions retire",
            "facilities retire", "reports population load", "audit verify"} <= paths


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help_and_shows_its_default(path, command):
    ctx = command.context_class(command, info_name=" ".join(path))
    assert command.help, f"nhr {' '.join(path)} has no help text"
    problems = []
    for param in _params(command):
        name = param.opts[0] if _is_option(param) else param.name.upper()
        text = getattr(param, "help", None)
        if not text:
            problems.append(f"{name}: no help")
            continue
        if param.required:
            continue
        if _is_option(param) and param.is_flag and param.default in (False, None) and not param.secondary_opts:
            continue  # a plain on/off flag: absent means off
        record = param.get_help_record(ctx)
        shown = record[1] if record else ""
        if "default" not in shown.lower():
            problems.append(f"{name}: default not shown (give it a default Typer shows, or say it in the help)")
    assert not problems, f"nhr {' '.join(path)}: " + "; ".join(problems)


def test_progress_is_quiet_when_not_a_terminal():
    quiet = Console(file=io.StringIO(), force_terminal=False)
    with progress.bar(quiet) as bar:
        bar.update(bar.add_task("work", total=2), completed=2)
    assert quiet.file.getvalue() == ""
    loud = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress.bar(loud) as bar:
        bar.update(bar.add_task("work", total=2), completed=2)
    assert "work" in loud.file.getvalue() and "2/2" in loud.file.getvalue()
