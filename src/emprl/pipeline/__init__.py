"""The runner: the stage table, train-all, the chain check, smoke mode, recipes and stage stamps."""
