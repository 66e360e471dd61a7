"""The translation model: `seq2seq` (Keras graph and step API) and `decoding` (greedy, beam)."""
