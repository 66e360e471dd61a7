"""Closing the loop after @champion: batch translation, incoming-text drift, the champion watch."""
