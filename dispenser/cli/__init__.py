"""``dispenserctl``: the staff and technician command line for dispenserd (docs/cli.md)."""
