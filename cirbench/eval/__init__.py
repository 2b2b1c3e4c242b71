"""Evaluation: ranking and Recall@K under each dataset's protocol, prediction files, noise detection, submissions."""
