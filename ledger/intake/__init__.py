"""Intake: how a contact from any channel becomes events, signed, once."""
