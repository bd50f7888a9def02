"""The credits service: the capability bank of learning credits (ARCHITECTURE §4).

Consumes `learning.progress` (course.completed deposits a lot), `learning.catalog` (the
catalogue for recommendations) and `people.agents` (tier and team); publishes
`learning.credits.requirement_met.v1` and `learning.credits.expired.v1`.

- bank.py        lots, validity at an instant, balances, expiring soon (pure)
- readiness.py   tier requirements, what is missing, first met, recommendations (pure)
- roster.py      the agent's tier and team from observations at event times (pure)
- store.py       documents, indexes and queries
- handlers.py    consumers, grants, revocations and expiry in units of work
- views.py       the read side (the credit view, lots, history, the team view)
- policy.py      settings (CREDITS section) and the requirement table; the expiry timer
- service.py     the nameko service
"""
