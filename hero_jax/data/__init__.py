"""Data: subtitle-frame alignment, source readers, tokenizers, dataset builds, grain pipelines."""
