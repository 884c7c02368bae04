"""Evaluation stage: a report per model family, the evaluation history, and the champion."""
