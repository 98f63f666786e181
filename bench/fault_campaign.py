#!/usr/bin/env python3
"""Run the fault campaign: every fault the simulator can inject, while the machine
dispenses (docs/reliability.md). The campaign lives in
``dispenser.testing.campaigns.faults``, where the test suite runs a short version of it;
``--help`` lists the options."""

from __future__ import annotations

import sys

from dispenser.testing.campaigns.faults import main

if __name__ == "__main__":
    sys.exit(main())
