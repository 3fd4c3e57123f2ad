"""The shared library: errors, files, models, policies, prompts, precision, ranks, mechanisms."""
