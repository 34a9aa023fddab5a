"""Hardware qualification: `python -m hwtests --quick|--full --out DIR` measures what this box holds.

Modules, one job each: `__main__` (command line, the order of the steps, the measured server's
environment), `steps` (timing and the progress line, inventory, cold start, the single-stream pass,
noise), `sweep` (capacity sweeps on the load tester of clients/loadtest), `knee` (where the knee
lies: the steps at it tried again, best of three, and the spread single passes would have read),
`gpu` (GPU use through tegrastats, NVML or nvidia-smi), `noise` (noise made by code), `speech` (the
bundled speech set), `verdict` (device classes, warnings, recommended config), `report` (report.json
and report.md), `html_report` (the self-contained report.html) and `svg_plot` (its line charts as
inline SVG, no plotting library).
docs/hwtests.md explains how to run it and how to read the report.
"""
