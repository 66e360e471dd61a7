"""Data stages: fetch the raw corpus (sources), validate it (Great Expectations), clean it."""
