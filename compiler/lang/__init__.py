"""The spec language: loading, typed models, checks, templates, rendering, schema.

No TensorFlow and no NumPy: this is what the core install (and a pre-commit hook) runs.
"""
