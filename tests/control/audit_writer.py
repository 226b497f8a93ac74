"""Append audit events from a separate OS process (the multi-process store tests).

Prints ``ready`` once the store is open, waits for a line on stdin with ``--wait-go``,
then appends ``--count`` events, each in its own transaction, printing each event's
``seq`` (flushed) only after its commit returned: every printed seq is acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from control.audit import EventType
from control.store import open_store


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--actor", default="writer")
    parser.add_argument("--hmac-key", default="")
    parser.add_argument("--wait-go", action="store_true")
    args = parser.parse_args()
    key = bytes.fromhex(args.hmac_key) if args.hmac_key else None
    async with open_store(args.url, schema=args.schema, hmac_key=key) as store:
        print("ready", flush=True)
        if args.wait_go:
            sys.stdin.readline()
        for i in range(args.count):
            event = await store.audit.record(
                EventType.CONFIG_RELOADED, args.actor, f"writer/{args.actor}", {"i": i}
            )
            print(event.seq, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
