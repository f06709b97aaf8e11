"""The floor every web face stands on: the caller, bodies, responses and the one error shape."""
