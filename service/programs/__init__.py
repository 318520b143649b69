"""Programs: booking, changes, staffing, their sessions, the therapist's own view and calendar
feeds."""
