"""Automation: retraining when new batches or labels have flowed through, and schedules."""
