"""Ingestion stage: raw images and their labels, one partition per landing-zone batch."""
