"""The translation model: `seq2seq` (Keras graph and step API), `recurrent` (its LSTM), `losses`
(what training minimises) and `decoding` (greedy, beam). Backend-neutral Keras 3 (keras.ops).
"""
