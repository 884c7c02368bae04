"""The service's routes, one APIRouter per concern: health, the served model, scoring, labeling,
annotations and dashboard (the JSON API and its files), and pages (the HTML pages). What they
share comes from ``serving.dependencies``, ``schemas``, ``web`` and ``windows``: no router
imports another (``test_layers``)."""
