"""``python -m terminal_agent.doctor``: the doctor without the agent's CLI around it."""

from __future__ import annotations

import sys

from terminal_agent.doctor.cli import main

sys.exit(main())
