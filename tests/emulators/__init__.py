"""Emulators of the external services the system talks to, for tests and local runs."""
