"""Downstream evaluators and metrics."""
