#!/usr/bin/env python3
"""Run the edge campaign: a full disk, pipelined and unauthenticated floods, a second
daemon, a tampered audit trail, short-dated stock, control characters and a replaced robot
board, each with the real processes (docs/reliability.md). The campaign lives in
``dispenser.testing.campaigns.edges``, where the test suite runs a short version of it;
``--help`` lists the options (``--only CASE ...`` picks cases)."""

from __future__ import annotations

import sys

from dispenser.testing.campaigns.edges import main

if __name__ == "__main__":
    sys.exit(main())
