"""Data: subtitle-frame alignment (more to come: TFDS builders, tokenizers, grain pipelines)."""
