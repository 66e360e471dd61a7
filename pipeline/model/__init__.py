"""The translation model: `seq2seq` (Keras graph and step API), `recurrent` (its LSTM),
`copy_attention` (optional pointer-generator copying), `losses` (what training minimises) and
`decoding` (greedy, beam; with `beam` and `search_steps`). Backend-neutral Keras 3 (keras.ops).
"""
