"""The `distbreaker` command line (click)."""
