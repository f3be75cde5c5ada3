"""Model and sampling: the network, the numpy sampler, traces, the memorization index."""
