"""The pieces of `mt evaluate` (pipeline/evaluate.py runs the stage): reading the splits, scoring
them as their task is scored, breaking scores down by source length, writing the reports."""
