"""The nightly run of a line, step by step, and onboarding a data set as a new line."""
