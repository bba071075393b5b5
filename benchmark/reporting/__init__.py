"""Reporting: records -> leaderboards, summaries, the papers' tables and plots."""
