"""Simulated visitors: the learned next-page model, click model, rewards and Gymnasium envs."""
