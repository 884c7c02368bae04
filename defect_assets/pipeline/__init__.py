"""Stage logic that joins storage and the pure ML code, without Dagster: each function here is
what one asset does, callable and testable on its own."""
