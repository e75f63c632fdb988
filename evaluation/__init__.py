"""The evaluation harness: the rate/accuracy study across cuts, N and methods."""
