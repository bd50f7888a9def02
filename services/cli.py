"""`skillquest`: operator commands.

    skillquest dlq list SERVICE [--limit N]
    skillquest dlq show SERVICE PARTITION:OFFSET
    skillquest dlq replay SERVICE [PARTITION:OFFSET ...]   (all when none given)

Connection settings come from the same environment variables as the services
(KAFKA_BOOTSTRAP_SERVERS, NAME_PREFIX).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from contracts.topics import CONSUMING_SERVICES
from services.runtime.dead_letters import DeadLetterStore


def _store(service: str) -> DeadLetterStore:
    return DeadLetterStore(
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        service,
        os.environ.get("NAME_PREFIX", ""),
    )


def _dlq(args: argparse.Namespace) -> int:
    store = _store(args.service)
    if args.action == "list":
        letters = store.letters(limit=args.limit)
        for position, letter in letters:
            print(
                f"{position}\t{letter.failed_at}\t{letter.reason}\t{letter.topic}\t"
                f"{letter.event_type or '-'}\t{letter.error[:120]}"
            )
        print(f"{len(letters)} dead letter(s) for {args.service}", file=sys.stderr)
        return 0
    if args.action == "show":
        found = store.get(args.positions[0]) if args.positions else None
        if found is None:
            print("no such dead letter; `skillquest dlq list` shows positions", file=sys.stderr)
            return 1
        document = found.model_dump()
        value = found.value
        try:
            document["value"] = json.loads(value)
        except ValueError:
            document["value"] = value.decode(errors="replace")
        print(json.dumps(document, indent=2))
        return 0
    replayed = store.replay(args.positions or None)
    print(f"replayed {len(replayed)} message(s): {' '.join(replayed)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skillquest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dlq = commands.add_parser("dlq", help="list, inspect and replay dead letters")
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("service", choices=CONSUMING_SERVICES)
    dlq.add_argument("positions", nargs="*", help="PARTITION:OFFSET as `list` prints them")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.set_defaults(run=_dlq)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
