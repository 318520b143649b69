"""Scheduling rules, pure (no database, no HTTP): the recurrence engine, a program's planned
occurrences, time slots and clashes, the staffing rules and the suggestion score. The
programs package loads the facts these rules judge and writes what they decide."""
