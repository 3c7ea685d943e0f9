"""Low-balance notifications: detection and windows in the store (notifications.py), what to
send and how it is signed (rules.py), the webhook sender thread (sender.py), and the admin API
that lists them (routes.py)."""
