"""Tasks the project generates itself, with ground truth, for methods that learn from preferences."""
