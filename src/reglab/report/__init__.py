"""Reports read results.json files only: no W&B, no network."""
