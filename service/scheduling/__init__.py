"""Scheduling: recurrence (pure), materialization and conflict checks of program sessions."""
