"""Run the sandbox supervisor: `python -m sandbox` (its token and secrets arrive on stdin)."""

from sandbox.supervisor import main

raise SystemExit(main())
