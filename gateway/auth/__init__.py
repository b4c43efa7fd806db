"""Authentication (password file) and authorisation (ACL) for the broker."""
