"""`energy-pipeline api-token`: a read API client's token and its tokens-file entry.

A module of its own: it reads no settings and needs neither aiohttp nor the database driver,
only `api.auth`, which also holds the file format the API reads.
"""

from __future__ import annotations

import argparse
import sys

from energy_pipeline.api.auth import TokensFileError, add_client, entry, new_token
from energy_pipeline.core.errors import USAGE, CommandError


def run_token(args: argparse.Namespace) -> int:
    """`energy-pipeline api-token`: a client's entry for the tokens file."""
    if args.stdin:
        token = sys.stdin.readline().strip()
        if not token:
            raise CommandError("no token on standard input", fix="pipe the token in",
                               status=USAGE)
    else:
        token = new_token()
    try:
        if args.file:
            new = add_client(args.file, args.client, token)
            print(f"{'added' if new else 'replaced'} client {args.client} in {args.file}",
                  file=sys.stderr)
            if not args.stdin:
                print(token)
        elif args.stdin:
            print(entry(args.client, token))
        else:
            raise CommandError("say where the entry goes", status=USAGE,
                               fix="give --file <tokens file>, or --stdin to hash a token you "
                               "have and print its entry")
    except TokensFileError as exc:
        raise CommandError(str(exc), status=USAGE) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {args.file}: {exc.strerror or exc}") from exc
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = commands.add_parser(
        "api-token",
        help="make a read API client's token and its tokens-file entry",
        description=(
            "With --file: makes a random token for CLIENT, writes CLIENT's entry (the token's "
            "SHA-256, never the token) into the tokens file, replacing an older entry of "
            "CLIENT (rotation), and prints the token on standard output, once: give it to the "
            "client. With --stdin: reads a token you already have and prints its entry "
            "(`<client>:<sha256 hex>`). A running API re-reads the file when it changes."
        ),
        epilog=(
            "examples:\n"
            "  TOKEN=$(energy-pipeline api-token grafana --file api-tokens)\n"
            "  printf %s \"$TOKEN\" | energy-pipeline api-token grafana --stdin\n"
            "  kubectl create secret generic demo-api-tokens --from-file=tokens=api-tokens"
        ),
    )
    t.add_argument("client", metavar="CLIENT",
                   help="client name, as it appears in logs and metrics ([A-Za-z0-9_.-])")
    t.add_argument("--file", default="", help="tokens file to add the client to (created "
                   "with mode 0600 if absent)")
    t.add_argument("--stdin", action="store_true",
                   help="hash the token given on standard input instead of making one")
    t.set_defaults(func=run_token)
