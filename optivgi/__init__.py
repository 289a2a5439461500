"""opti-vgi: smart charging that keeps a site under its power limit."""
