"""The HTTP reward server and scale-out scoring."""
