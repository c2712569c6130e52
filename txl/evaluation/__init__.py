"""Scoring a model: what an evaluation is and its loop (evaluate), named protocols, generation, and the analyses
of what a trained model does with its memory."""
