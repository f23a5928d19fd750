"""The main job: a whole staged rollout on one machine, with live progress and a report.

    python -m rollout.demo        (what `make demo` runs)

See `__main__.py` for the sequence and `report.py` for what the report holds.
"""
