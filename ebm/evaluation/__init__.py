"""Evaluation: partition functions and log-likelihoods."""
