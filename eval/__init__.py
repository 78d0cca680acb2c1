"""Evaluation: VLM-as-judge, principle-wise verifier, reference metrics, and reports."""
