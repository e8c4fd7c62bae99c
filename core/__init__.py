"""The engine: sessions as actors, the prompt queue, the event log, the broker, sandbox
providers, the bridge and model proxy, GitHub, secrets and configuration."""
