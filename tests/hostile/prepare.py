"""Protected file of the hostile summary-mode tasks: the run imports it and must not change it."""

RULE = "the run may read this file, never change it"
