"""Reporting: tables (console, Markdown, CSV), significance marks and figures built from run directories."""
