"""A scripted LLM API speaking the Anthropic and OpenAI wire formats."""

from tests.emulators.llm.server import LLMEmulator

__all__ = ["LLMEmulator"]
