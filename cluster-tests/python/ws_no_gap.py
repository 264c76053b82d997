"""Follows one topic over Conclave's WebSocket with the `websockets` library and checks that
every message arrives once, in order, with no gap, from the sequence it subscribed from until
a message whose body holds `"final": true`.

Run by cluster-tests/tests/realtime.rs against a cluster it starts (and kills nodes of). Prints
JSON lines on stdout: `{"type": "subscribed", ...}` once the subscription is live (the test
starts publishing then), and `{"type": "done", "received": [{"seq", "body"}...]}` at the end.
Exits non-zero, with the reason on stderr, on any gap, repeat, reordering, error frame, close
or timeout.
"""

import argparse
import asyncio
import json
import sys

import websockets


def out(obj):
    print(json.dumps(obj), flush=True)


async def follow(args):
    # The server pings; the client's own keepalive stays on as well (websockets' default).
    async with websockets.connect(args.url, max_size=2**22, open_timeout=args.timeout) as ws:
        await ws.send(json.dumps({"type": "auth", "token": args.key}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
        if ready.get("type") != "ready":
            raise SystemExit(f"expected a ready frame, got {ready}")
        stream = f"topic:{args.topic}"
        await ws.send(json.dumps({"type": "subscribe", "stream": stream, "from": args.from_seq}))
        subscribed = json.loads(await asyncio.wait_for(ws.recv(), args.timeout))
        if subscribed.get("type") != "subscribed" or subscribed.get("from") != args.from_seq:
            raise SystemExit(f"expected subscribed from {args.from_seq}, got {subscribed}")
        out({"type": "subscribed", "from": subscribed["from"]})

        expected = args.from_seq
        received = []
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), args.timeout)
            except asyncio.TimeoutError:
                raise SystemExit(f"no frame within {args.timeout}s; waiting for seq {expected}")
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "pong":
                continue
            if kind != "event":
                raise SystemExit(f"unexpected frame while waiting for seq {expected}: {frame}")
            if frame.get("stream") != stream:
                raise SystemExit(f"event of another stream: {frame}")
            seq = frame["seq"]
            if seq != expected:
                what = "repeat" if seq < expected else "gap"
                raise SystemExit(f"{what}: expected seq {expected}, got {seq}")
            if frame["data"]["seq"] != seq or frame["cursor"] != str(seq):
                raise SystemExit(f"event seq, data seq and cursor disagree: {frame}")
            body = frame["data"]["body"]
            received.append({"seq": seq, "body": body})
            expected += 1
            if isinstance(body, dict) and body.get("final"):
                break
        # Acknowledge nothing (no durable subscription here) and close cleanly.
        out({"type": "done", "received": received})


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="ws://host:port/ws of the node to hold")
    parser.add_argument("--key", required=True, help="an API key")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--from-seq", type=int, required=True, dest="from_seq")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="longest wait for any one frame, seconds")
    args = parser.parse_args()
    try:
        asyncio.run(follow(args))
    except websockets.exceptions.ConnectionClosed as e:
        sys.exit(f"connection closed: code {e.rcvd.code if e.rcvd else None}: {e}")


if __name__ == "__main__":
    main()
