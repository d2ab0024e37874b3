"""Benchmarks of faq_tf, run as modules from the repository root: `python -m benchmarks.demo`."""
