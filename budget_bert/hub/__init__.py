"""Hub integration: the background snapshot pusher, the model card, the push-after-the-fact command, and the
redaction that keeps the token out of everything written or printed."""
