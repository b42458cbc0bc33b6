"""llm-edge: a microsecond-overhead gateway for OpenAI and Anthropic API traffic."""

__version__ = "0.1.0"
