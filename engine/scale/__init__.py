"""Scale: distribution strategies, multi-worker training, memory estimates, TensorBoard."""
