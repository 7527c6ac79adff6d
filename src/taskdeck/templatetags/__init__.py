"""Template tags of the dashboard (``{% load taskdeck_ui %}``)."""
