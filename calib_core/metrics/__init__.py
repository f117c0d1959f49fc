"""What a pruned (or dense) model is measured by: perplexity under a recorded protocol, the offline
cloze proxy and lm-eval accuracy, similarity of calibration text to pretraining data, and mask
agreement between runs."""
