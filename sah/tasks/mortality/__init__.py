"""task=mortality: 3-month mortality from the admission CT (study 3)."""
