"""Leaderboards: markdown tables (and CSVs) written from the run records, the paper beside us."""
