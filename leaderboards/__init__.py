"""Leaderboard files (``*.yaml``): one table each, read by :mod:`cirbench.leaderboards`."""
