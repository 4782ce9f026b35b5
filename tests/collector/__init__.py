"""Collector tests: config, scrape, storage, live figures, accounts."""
