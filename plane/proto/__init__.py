"""Generated protocol modules (see generate.py)."""
