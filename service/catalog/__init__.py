"""The catalog: client organizations and their locations, therapists with their availability
and time off, the offerings the provider sells, and API keys."""
