"""The service's routes, one APIRouter per concern: health, the served model, scoring."""
