"""The solve log and reports over usage events: time ranges (timerange.py), the covering index
every query names (usageindex.py), the paged log (solvelog.py), aggregate reports
(reports.py), and their admin API (routes.py)."""
