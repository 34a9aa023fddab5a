"""`python -m clients.loadtest` (console script `stt-loadtest`): parse, run, report.

Exit 0 when the run completed (errors it counted included), 1 when the server it was to start
did not come up, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clients.loadtest import UsageError, add_load_arguments, add_target_arguments, load_config, target_server
from clients.loadtest.report import ProgressLine, compute_figures, format_report, plot_available, write_json, write_plot
from clients.loadtest.runner import run_load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clients.loadtest",
                                     description="Open N concurrent streams against the appliance and "
                                                 "report final latency, losses, errors and server load.")
    add_load_arguments(parser)
    add_target_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="OUT", help="write the figures and every final here")
    out.add_argument("--plot", metavar="OUT.png", help="latency distribution and latency over time "
                                                       "(needs matplotlib)")
    out.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.plot and not plot_available():
            raise UsageError("--plot needs matplotlib: pip install matplotlib")
        config, skipped = load_config(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if skipped:
        print(f"skipped (longer than --max-file-sec): {', '.join(skipped)}", file=sys.stderr)
    progress = None if args.quiet else ProgressLine(sys.stderr)
    try:
        with target_server(args) as target:
            try:
                result = run_load(config, target.address, target.pid, progress)
            finally:
                if progress:
                    progress.close()
    except (RuntimeError, TimeoutError) as err:
        print(f"error: the server did not start: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    figures = compute_figures(result)
    print(format_report(figures))
    if args.json:
        write_json(args.json, figures, result, files=[clip.name for clip in config.clips])
    if args.plot:
        write_plot(args.plot, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
