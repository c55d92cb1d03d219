"""The ``lmatlas`` command: subcommands, each a thin shell over the public API.

Each subcommand lives in ``lmatlas.commands.<name>``: its one-line ``HELP`` (and a longer
``DESCRIPTION``), and ``arguments(parser)``, which adds its arguments to the parser made here and
sets ``func`` to a callable taking the parsed arguments and returning an exit code. A user's mistake raises ``LmatlasError``: printed as one line, exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .commands._flags import FLAGS, in_flags
from .errors import LmatlasError

# The order here is the order of `lmatlas --help`.
COMMANDS = [
    "embed", "similarity", "search", "run", "topics", "generate", "chat", "catalog", "estimate",
    "train", "finetune", "tokenizer", "convert", "serve",
]


class _Parser(argparse.ArgumentParser):
    # argparse exits with 2 and its usage text; keep that, but make the last line our format.
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"lmatlas: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="lmatlas", description="Landmark language models, from scratch in PyTorch.")
    parser.add_argument("--version", action="version", version=f"lmatlas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        command = importlib.import_module(f"lmatlas.commands.{name}")
        p = sub.add_parser(name, help=command.HELP, description=getattr(command, "DESCRIPTION", None))
        command.arguments(p)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A notice for the user (e.g. "3 texts were truncated"), not a developer's warning. Some
    # name lmatlas themselves, for Python users who see them among other libraries' warnings.
    text = str(message).removeprefix("lmatlas: ")
    print(f"lmatlas: warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LmatlasError as e:
        # The library names its Python arguments; the user typed flags.
        message = in_flags(in_flags(str(e), FLAGS), getattr(args, "flags", {}), getattr(args, "flag_words", False))
        print(f"lmatlas: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `lmatlas ... | head` closes the pipe early; that is not an error.
        return 0


if __name__ == "__main__":
    sys.exit(main())
