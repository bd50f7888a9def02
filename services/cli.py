"""`skillquest`: operator commands.

    skillquest dlq list SERVICE [--limit N]
    skillquest dlq show SERVICE PARTITION:OFFSET
    skillquest dlq replay SERVICE [PARTITION:OFFSET ...]   (all when none given)
    skillquest rebuild SERVICE [--apply] [--keep]          (leaderboards, credits, badges)
    skillquest rebuild leaderboards --from-log             (boards from the applied-points log)

`rebuild` replays the service's input topics from offset 0 through the service itself
into a database of its own (services/runtime/rebuild.py), then prints how that state
differs from the live one. `--apply` (with the live service stopped) replaces the live
derived state and handled-event ids with it; configuration and the outbox stay.

Connection settings come from the same environment variables as the services
(KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI, NAME_PREFIX), through deploy/config.yml for `rebuild`
(`--config` to use another file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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


def _rebuild(args: argparse.Namespace) -> int:
    from services.leaderboards.rebuild import load_config, rebuild_from_config
    from services.runtime.rebuild import Rebuild, RebuildError

    config = load_config(args.config)
    if args.from_log:
        if args.service != "leaderboards":
            print("--from-log is for leaderboards only", file=sys.stderr)
            return 2
        print(rebuild_from_config(config).model_dump_json(indent=2))
        return 0
    try:
        rebuild = Rebuild(config, args.service)
    except RebuildError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        seconds = rebuild.run(timeout=args.timeout)
        differences = rebuild.differences()
        report: dict[str, object] = {
            "service": args.service,
            "rebuilt_into": rebuild.rebuild_db,
            "seconds": round(seconds, 1),
            "differences": differences,
        }
        if args.apply:
            report["replaced"] = rebuild.apply()
        if not args.keep:
            rebuild.discard()
        print(json.dumps(report, indent=2))
        return 0 if args.apply or not differences else 1
    except RebuildError as error:
        print(error, file=sys.stderr)
        return 2
    finally:
        rebuild.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skillquest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dlq = commands.add_parser("dlq", help="list, inspect and replay dead letters")
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("service", choices=CONSUMING_SERVICES)
    dlq.add_argument("positions", nargs="*", help="PARTITION:OFFSET as `list` prints them")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.set_defaults(run=_dlq)
    rebuild = commands.add_parser(
        "rebuild", help="rebuild a derived view from its topics (or boards from their log)"
    )
    rebuild.add_argument("service", choices=CONSUMING_SERVICES)
    rebuild.add_argument("--apply", action="store_true", help="replace the live state (stopped)")
    rebuild.add_argument("--keep", action="store_true", help="keep the rebuilt database")
    rebuild.add_argument("--from-log", action="store_true", help="leaderboards: boards only")
    rebuild.add_argument("--timeout", type=float, default=1800.0)
    rebuild.add_argument("--config", type=Path, default=Path("deploy") / "config.yml")
    rebuild.set_defaults(run=_rebuild)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
