"""Scores of a sequence-to-sequence task beyond translation's BLEU and chrF (evaluate.py)."""
