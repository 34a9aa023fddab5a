"""Hardware qualification: `python -m hwtests --quick|--full --out DIR` measures what this box holds.

Modules, one job each: `__main__` (command line, the order of the steps), `steps` (timing and the
progress line, inventory, cold start, the single-stream pass, noise), `sweep` (capacity sweeps to the
knee, on the load tester of clients/loadtest), `gpu` (GPU use through nvidia-smi), `noise` (noise
made by code), `speech` (the bundled speech set), `verdict` (device classes, recommended config),
`report` (report.json and report.md), `html` (the self-contained report.html with its plots).
docs/hwtests.md explains how to run it and how to read the report.
"""
