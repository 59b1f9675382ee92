"""Recommendation policies: SB3 DQN/PPO, tabular value iteration and Q-learning, heuristics, evaluation."""
