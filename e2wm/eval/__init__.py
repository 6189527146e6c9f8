"""Evaluation: multiple-choice scoring by answer log-likelihood."""
