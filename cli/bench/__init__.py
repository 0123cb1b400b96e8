"""Benchmarks (``caseledger bench …``): intake and lag, projection rebuilds, audit verify. Not imported by the product."""
