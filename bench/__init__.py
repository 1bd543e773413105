"""Benchmarks: `make bench` prints one table. No assertions; figures are medians and same-run ratios."""
