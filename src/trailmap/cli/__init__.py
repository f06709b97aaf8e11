"""The command line: `trailmap serve`, `db`, `org`, `user`, `key`, `send`, `demo`."""
