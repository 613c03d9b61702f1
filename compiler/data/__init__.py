"""Training data: records from a corpus, tokenizers, examples (NumPy; no TensorFlow)."""
