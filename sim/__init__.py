"""llm-edge simulator: `python -m sim` runs mocks + gateway + load and prints a report.

`sim.loadgen` is the shared load generator (the benchmarks import it). Importing this
package has no side effects.
"""
