"""The progress service: roster, catalogue, enrolments, module progress, feedback and ticket
intake; the source of every learning fact the other services react to."""
