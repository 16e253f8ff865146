"""The demo: a real batch end to end against the two bundled demo APIs (CRM and accounting)."""
