"""Landing stage: the sensor that turns complete landing-zone batches into partitions and runs."""
