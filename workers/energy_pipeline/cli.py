"""`energy-pipeline <command>`: one entry point for every worker and tool."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from energy_pipeline.core.errors import USAGE, CommandError, one_line
from energy_pipeline.core.logs import configure_logging
from energy_pipeline.core.settings import SettingsError

log = logging.getLogger("energy_pipeline.cli")


# Every subcommand is an entry point of the group below, `<command> = <module>:register`,
# where `register(commands)` takes the argparse sub-parsers object and sets `func` on the
# parsers it adds. pyproject.toml declares the workers' and the operator's; the harness
# distribution (tests, demo, local services) declares its own, so this package names neither.
# A worker imports only its own module: the bridge has no use for LightGBM, SciPy or the
# Kubernetes client, which cost start-up time and memory in every pod.
COMMAND_GROUP = "energy_pipeline.commands"


def command_entry_points() -> dict[str, EntryPoint]:
    """The installed commands by name."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with a known `command`, only the module that adds it is imported."""
    parser = argparse.ArgumentParser(
        prog="energy-pipeline", description=__doc__,
        epilog="`energy-pipeline <command> --help` shows a command's options with their "
        "defaults and the environment variables it reads.",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help="print the stack trace of a failure (also after the command, or LOG_LEVEL=DEBUG)",
    )
    # HelpParser: every command's --help shows its options' defaults and its own epilog as
    # written (the environment variables it reads, from its settings class).
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=HelpParser, action=HelpSubParsersAction
    )
    available = command_entry_points()
    if command in available:
        chosen = [available[command]]
    else:  # --help, a typo: the full list of commands
        chosen = sorted(available.values(), key=lambda ep: ep.name)
    registered: set[str] = set()
    for ep in chosen:
        if ep.value not in registered:  # one module may add several commands
            registered.add(ep.value)
            ep.load()(commands)
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after each option's help; paragraphs of a description or epilog are wrapped,
    except those with indented lines (the table of environment variables), kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                paragraphs.append(paragraph)
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)", "(default: False)" and "(default: )" say nothing a reader can use;
        # a help that states its default already says it once.
        if (
            any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or action.default == ""
            or "(default" in (action.help or "")
            or isinstance(action, argparse._SubParsersAction)
        ):
            return action.help
        return super()._get_help_string(action)


class HelpSubParsersAction(argparse._SubParsersAction):  # type: ignore[type-arg]
    """add_parser: a command without a description of its own shows its one-line help."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("description") is None and kwargs.get("help"):
            help_text = str(kwargs["help"])
            kwargs["description"] = help_text[0].upper() + help_text[1:] + "."
        return super().add_parser(name, **kwargs)  # type: ignore[no-any-return]


class HelpParser(argparse.ArgumentParser):
    """The parser of every command (and, through add_subparsers, of its sub-commands)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", HelpSubParsersAction)


def command_name(args: argparse.Namespace) -> str:
    """`topics create`: the command and the sub-commands that were chosen."""
    chosen = [args.command]
    chosen += [v for k, v in vars(args).items() if k.endswith("_command") and isinstance(v, str)]
    return " ".join(chosen)


def as_command_error(exc: Exception, command: str) -> CommandError | None:
    """The one-line form of a failure raised outside the command's own checks, if it has one."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, SettingsError):
        return CommandError(
            str(exc),
            fix=f"set them in the environment (`energy-pipeline {command} --help` lists them)",
            status=USAGE,
        )
    kafka = sys.modules.get("energy_pipeline.core.kafka")
    if kafka is not None:
        return kafka.as_command_error(exc)  # type: ignore[no-any-return]
    return None


def fail(command: str, exc: Exception, debug: bool) -> int:
    """Print `exc` as one line on stderr (after its stack trace with --debug); the exit status."""
    if debug:
        traceback.print_exc()
    error = as_command_error(exc, command)
    if error is None:
        what = f"{type(exc).__name__}: {exc}"
        if not debug:
            what += " (run with --debug for the stack trace)"
        error = CommandError(what)
    sys.stderr.write(f"energy-pipeline {command}: error: {one_line(error)}\n")
    sys.stderr.flush()
    return error.status


def tune_gc() -> None:
    """Workers allocate a few short-lived objects per message but no reference cycles that
    matter; the cyclic collector instead kept rescanning the large heap of imported libraries
    (18 % of the bridge's CPU in a py-spy profile). Freeze what exists now and collect less
    often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug before or after the command: the sub-parsers do not know it, so it is taken out.
    debug = "--debug" in argv or os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG"
    argv = [arg for arg in argv if arg != "--debug"]
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    configure_logging(component=args.command)
    tune_gc()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place every failure ends
        return fail(command_name(args), exc, debug)


if __name__ == "__main__":
    sys.exit(main())
