"""Run the sandbox supervisor: `python -m sandbox` (the token arrives on stdin)."""

from sandbox.supervisor import main

raise SystemExit(main())
