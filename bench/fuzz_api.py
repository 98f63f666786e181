#!/usr/bin/env python3
"""Run API fuzzing: generated and mutated messages against a running dispenserd
(docs/reliability.md). The campaign lives in ``dispenser.testing.campaigns.fuzz``, where
the test suite runs a short version of it; ``--help`` lists the options."""

from __future__ import annotations

import sys

from dispenser.testing.campaigns.fuzz import main

if __name__ == "__main__":
    sys.exit(main())
