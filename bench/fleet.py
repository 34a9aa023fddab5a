"""The load tester through a fleet: N appliances behind HAProxy (the shipped config), one address.

    python bench/fleet.py                                  # 3 nodes, 8 channels, 40 s
    python bench/fleet.py --nodes 2 --channels 12 --duration 60 --partials
    python bench/fleet.py --kill-after 15                  # kill -9 one node 15 s into the run
    python bench/fleet.py --term-after 15                  # SIGTERM one node (drain notice 3 s)

Starts the nodes (sharing a ticket secret) and HAProxy on loopback (clients/local_fleet.py), runs
the load tester's runner in-process against the balancer, then prints its report (the `nodes:` line
has the finals each node sent, the resumes and the repeated finals), HAProxy's calls per node, and
when a node was stopped, which one and how. Every load option of `python -m clients.loadtest` applies.
On one box the nodes share its cores: this shows the spread and what a node failure costs the
streams, not the capacity of N boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

from clients.loadtest import UsageError, add_load_arguments, load_config
from clients.loadtest.report import ProgressLine, compute_figures, format_report
from clients.loadtest.runner import run_load
from clients.local_fleet import LocalFleet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/fleet.py", description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, duration_sec=40.0)
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--nodes", type=int, default=3, help="appliances behind the balancer (default: 3)")
    fleet.add_argument("--kill-after", type=float, metavar="SEC", help="kill -9 one node this far into the run")
    fleet.add_argument("--term-after", type=float, metavar="SEC", help="SIGTERM one node this far into the run")
    fleet.add_argument("--drain-notice", type=float, default=3.0,
                       help="the nodes' server.drain_notice_sec (default: 3, > HAProxy's ~1.5 s to mark one down)")
    fleet.add_argument("--json", metavar="OUT", help="write the figures here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kill_after is not None and args.term_after is not None:
        print("error: --kill-after or --term-after, not both", file=sys.stderr)
        return 2
    try:
        config, _ = load_config(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stopped: dict[str, str] = {}
    with LocalFleet(args.nodes, os.urandom(16).hex(), env={"STT_SERVER_DRAIN_NOTICE_SEC": str(args.drain_notice),
                                                            "STT_SERVER_MAX_SESSIONS": "64"}) as fleet:
        victim_name = f"node{args.nodes}"
        victim = fleet.nodes[victim_name]
        timer = None
        if args.kill_after is not None or args.term_after is not None:
            how = "kill -9" if args.kill_after is not None else "SIGTERM"
            sig = signal.SIGKILL if how == "kill -9" else signal.SIGTERM

            def stop_victim() -> None:
                assert victim.process is not None
                victim.process.send_signal(sig)
                stopped.update(node=victim_name, how=how)
            timer = threading.Timer(args.kill_after if args.kill_after is not None else args.term_after, stop_victim)
            timer.start()
        progress = ProgressLine(sys.stderr)
        try:
            result = run_load(config, fleet.address, None, progress)
        finally:
            progress.close()
            if timer is not None:
                timer.cancel()
        assert fleet.balancer is not None
        calls = fleet.balancer.requests_per_server()
    figures = compute_figures(result)
    print(format_report(figures))
    print("HAProxy calls per node (CreateSession + StreamingRecognize): "
          + ", ".join(f"{name} {n}" for name, n in calls.items()))
    if stopped:
        print(f"stopped: {stopped['node']} ({stopped['how']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "calls_per_node": calls, "stopped": stopped},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
