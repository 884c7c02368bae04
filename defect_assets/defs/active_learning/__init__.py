"""Active-learning stage: the unlabeled pool per batch, the labeling queue scored by the
production model, and the sensor that turns labels from the labeling page into retraining."""
