"""Exporting: a trained run to a SavedModel that TF Serving loads and serves correctly.

- `savedmodel`: `export_saved_model`, verification, digests, `inspect_export`;
- `opened`: `open_export`, one reader of an export for generation, evaluate and inspect;
- `signatures`: the serving signatures (serving_default, step, generate, generate_text)
  and their warmup requests;
- `serving`: the base directory's models.config, under a lock;
- `batching`: TF Serving's batching parameters for the export's limits.
"""
