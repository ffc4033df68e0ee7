"""Running conditions over stimuli: conditions, the batch runner, and the prediction store."""
