"""Exporting: a trained run to a SavedModel that TF Serving loads and serves correctly.

- `savedmodel`: `export_saved_model`, verification, digests;
- `opened`: `open_export`, the one reader of an export (generation, evaluate), and
  `inspect_export`;
- `signatures`: the serving signatures (serving_default, step, generate, generate_text)
  and their warmup requests;
- `serving`: the base directory's models.config, under a lock;
- `batching`: TF Serving's batching parameters for the export's limits.
"""
