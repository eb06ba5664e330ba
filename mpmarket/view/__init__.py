"""Pure formatting of runs and markets: rich tables, the live view, the HTML page."""
