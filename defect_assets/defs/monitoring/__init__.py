"""Monitoring of the live endpoint: prediction_monitoring (daily) and its drift check."""
