"""Reading runs: statistics, tables, reports, studies and figures."""
