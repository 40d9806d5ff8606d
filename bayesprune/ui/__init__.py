"""The user's front ends: the command line and the notebook widgets."""
