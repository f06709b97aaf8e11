"""The architecture graph: its model (here), learning it (`learn/`) and asking it (`ask/`)."""
