"""Data stages: fetch the raw corpus, validate it (validate_raw, Great Expectations), clean it."""
