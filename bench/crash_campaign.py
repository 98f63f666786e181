#!/usr/bin/env python3
"""Run the crash campaign: SIGKILL the daemon again and again while it dispenses
(docs/reliability.md). The campaign lives in ``dispenser.testing.campaigns.crash``,
where the test suite runs a short version of it; ``--help`` lists the options."""

from __future__ import annotations

import sys

from dispenser.testing.campaigns.crash import main

if __name__ == "__main__":
    sys.exit(main())
