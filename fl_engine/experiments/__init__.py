"""Scientific experiments over the federation code: the grid of centralised / federated /
isolated settings (grid.py)."""
