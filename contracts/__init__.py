"""Skillquest's event and API contracts: pydantic v2 and the standard library only."""
