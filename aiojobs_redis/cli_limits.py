"""The `limits` command of the command line: a queue's start limits, and overrides at run time.

aiojobs-redis limits show QUEUE [--json]
aiojobs-redis limits set QUEUE [--rate 10/second] [--burst 2] [--max-running 3] [--group-...]
aiojobs-redis limits clear QUEUE [--rate] [--burst] [--max-running] [--group-...] [--declared]

Overrides are the control hash's `o:<field>` fields (limits.py): they win over the limits
declared in code (QueueLimits) until cleared; 0 lifts that limit. On a sharded queue the
values are divided among the queue and its shards, as a declaration's are.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from . import limits
from .engine import RedisEngine
from .flow import unknown_queues
from .keys import validate_queue
from .limits import DECLARED_FIELDS, LIMIT_NAMES, InvalidLimit, Limits

_HELP = {
    "rate": "job starts per second|minute|hour, e.g. 10/second",
    "burst": "starts allowed at once after a quiet spell",
    "maxrun": "jobs running at once across all workers",
    "grate": "each group's job starts per second|minute|hour",
    "gburst": "each group's burst",
    "gmaxrun": "each group's jobs running at once",
}
_OPTIONS = {field: "--" + LIMIT_NAMES[field].replace("_", "-") for field in DECLARED_FIELDS}


def _rate(text: str) -> float:
    if text.strip() == "0":
        return 0
    try:
        number: float | str = float(text)  # a number per second, as QueueLimits takes
    except ValueError:
        number = text
    try:
        return limits.interval_us(limits.parse_rate(number))
    except InvalidLimit as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    return _whole(text, 0, "a whole number >= 0 (0: no limit)")


def _burst(text: str) -> int:
    return _whole(text, 1, "a whole number >= 1")


def _whole(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}")
    return value


def add_commands(commands: Any, connection: argparse.ArgumentParser) -> None:
    group = commands.add_parser("limits", help="a queue's start limits: show them, override them at run time")
    actions = group.add_subparsers(dest="limits_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", parents=[connection], help="the limits in force: declared in code, overridden, effective"
    )
    show.add_argument("queue", metavar="QUEUE", help="the queue (a sharded one with its shards)")
    show.add_argument("--json", action="store_true", help="one JSON object per queue (and shard) and line")
    setter = actions.add_parser(
        "set",
        parents=[connection],
        help="override limits (they win over the code until cleared; 0 lifts a limit)",
    )
    setter.add_argument("queue", metavar="QUEUE", help="the queue (a sharded one: divided among its shards)")
    for field, option in _OPTIONS.items():
        rate, burst = field in ("rate", "grate"), field in ("burst", "gburst")
        setter.add_argument(
            option,
            dest=field,
            type=_rate if rate else _burst if burst else _count,
            metavar="N/UNIT" if rate else "N",
            help=_HELP[field] + (" (default: unchanged)" if burst else " (default: unchanged; 0: no limit)"),
        )
    setter.add_argument(
        "--new",
        action="store_true",
        help="limit a queue no job or worker has used yet (default: refused, as a typo)",
    )
    clear = actions.add_parser(
        "clear", parents=[connection], help="drop overrides (default: all), so the code's limits apply"
    )
    clear.add_argument("queue", metavar="QUEUE", help="the queue (a sharded one with its shards)")
    for field, option in _OPTIONS.items():
        clear.add_argument(option, dest=field, action="store_true", help=f"only {LIMIT_NAMES[field]}")
    clear.add_argument(
        "--declared",
        action="store_true",
        help="drop the limits declared in code instead (after removing a QueueLimits; workers "
        "write them again if some still declare them)",
    )


async def run(engine: RedisEngine, args: argparse.Namespace) -> int:
    new = getattr(args, "new", False)
    if not new and unknown_queues([validate_queue(args.queue)], await engine.known_queues()):
        # As pause: a typo must not create a queue (set_controls registers the queue).
        hint = " (pass --new to limit it before first use)" if args.limits_command == "set" else ""
        print(
            f"aiojobs-redis: error: unknown queue {args.queue!r}: no job was dispatched to it and "
            f"no worker served it{hint}; see `aiojobs-redis stats`",
            file=sys.stderr,
        )
        return 1
    queues = await engine._queues(args.queue)
    if args.limits_command == "set":
        given = {field: getattr(args, field) for field in DECLARED_FIELDS}
        if all(value is None for value in given.values()):
            raise InvalidLimit("limits set: give at least one limit, e.g. --rate 10/second")
        overrides = Limits(*given.values())
        for index, queue in enumerate(queues):
            part = overrides.divided(len(queues), index, args.queue).fields()
            await engine.set_controls(queue, {f"o:{f}": v for f, v in part.items() if v is not None})
        print(f"limits of {args.queue} overridden: {limits.describe(overrides)}")
    elif args.limits_command == "clear":
        chosen = [field for field in DECLARED_FIELDS if getattr(args, field)] or list(DECLARED_FIELDS)
        if args.declared:
            # A declared burst needs its rate (QueueLimits refuses one without): it goes too.
            chosen += [burst for rate, burst in (("rate", "burst"), ("grate", "gburst")) if rate in chosen]
            chosen = list(dict.fromkeys(chosen))
        names = [*chosen, "v"] if args.declared else [f"o:{field}" for field in chosen]
        for queue in queues:
            await engine.set_controls(queue, dict.fromkeys(names))
        what = "declared" if args.declared else "overridden"
        cleared = ", ".join(LIMIT_NAMES[field] for field in chosen)
        print(f"limits of {args.queue}: {what} {cleared} cleared (where set)")
    await _show(engine, queues, as_json=getattr(args, "json", False))
    return 0


async def _show(engine: RedisEngine, queues: list[str], *, as_json: bool) -> None:
    metas = await engine.controls(queues)
    for queue, meta in zip(queues, metas, strict=True):
        in_force = limits.effective(meta).fields()
        if as_json:
            print(orjson.dumps({"queue": queue, "controls": meta, "effective": in_force}).decode())
            continue
        print(f"{queue}{'  (paused)' if 'paused' in meta else ''}")
        table = [("LIMIT", "CODE", "OVERRIDE", "IN FORCE")] + [
            (
                LIMIT_NAMES[field],
                limits.describe_field(field, meta.get(field)),
                limits.describe_field(field, meta.get(f"o:{field}")),
                limits.describe_field(field, in_force[field]) if in_force[field] else "no limit",
            )
            for field in DECLARED_FIELDS
        ]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        for row in table:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
