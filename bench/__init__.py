"""Benchmarks with their baselines; not run by CI."""
