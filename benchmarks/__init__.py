"""Side-by-side benchmarks of rmt against the reference implementations."""
