"""Baseline systems that sit beside EmpRL in the results table."""
