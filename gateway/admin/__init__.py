"""The admin API: requests on ``<prefix>/bridge/request/<action>``, live updates, events."""
