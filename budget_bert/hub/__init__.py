"""Hub integration: the background snapshot pusher, the model card, and the push-after-the-fact command."""
