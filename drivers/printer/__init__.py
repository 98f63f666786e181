"""Driver for the label printer (ZPL II over a serial line)."""
