"""What runs leave behind, read back: the results database, DataFrames, sweep figures, probes, LLC, re-runs."""
