"""Benchmarks: `python -m bench` compares llm-edge with nginx and a direct call; `micro_*.py` are
pytest-benchmark files."""
