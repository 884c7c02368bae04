"""Deployment: the ``deployed_endpoint`` asset that promotes the champion and checks the
scoring service over HTTP, and the resource saying where that service answers."""
