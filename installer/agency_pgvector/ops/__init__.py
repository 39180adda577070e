"""Day-2 operations: one module per command, each over the same loaded client (common.load)."""
